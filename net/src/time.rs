//! The clock daemons use.
//!
//! It is a thin face over `tokio::time`, and that is the point: under the
//! ordinary build `tokio` is real tokio, under `--cfg madsim` it is
//! madsim-tokio whose time is simulated, and inside turmoil hosts tokio's
//! clock is paused and driven by the simulation. Daemons never read a clock
//! any other way, so the same code gets real or simulated time from how it
//! was built and started, not from anything it decides.

use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use tokio::time::Instant;

/// A deadline passed before the operation completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline of {0:?} passed")]
pub struct Elapsed(pub Duration);

#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// Added to the wall clock, in ms: a simulated host whose clock was
    /// stepped (as NTP steps a clock that drifted). `None`: the clock as
    /// it is. Monotonic time never jumps.
    wall_offset_ms: Option<Arc<AtomicI64>>,
}

impl Clock {
    pub fn new() -> Self {
        Clock {
            wall_offset_ms: None,
        }
    }

    /// A clock whose wall time is shifted by `offset_ms` (shared: changing
    /// it steps every clock made from it).
    pub fn with_wall_offset(offset_ms: Arc<AtomicI64>) -> Self {
        Clock {
            wall_offset_ms: Some(offset_ms),
        }
    }

    /// Monotonic now.
    pub fn now(&self) -> Instant {
        #[allow(clippy::disallowed_methods)] // The seam is the one door to the clock.
        Instant::now()
    }

    /// Wall-clock now, for timestamps people read (lock owners, logs). Never
    /// use it to measure intervals: it can jump.
    pub fn wall(&self) -> SystemTime {
        #[allow(clippy::disallowed_methods)] // The seam is the one door to the wall clock.
        let now = SystemTime::now();
        match self
            .wall_offset_ms
            .as_ref()
            .map(|o| o.load(Ordering::Relaxed))
        {
            None | Some(0) => now,
            Some(ms) if ms > 0 => now + Duration::from_millis(ms as u64),
            Some(ms) => now
                .checked_sub(Duration::from_millis(ms.unsigned_abs()))
                .unwrap_or(SystemTime::UNIX_EPOCH),
        }
    }

    /// Seconds since the Unix epoch, for stored timestamps.
    pub fn unix_secs(&self) -> u64 {
        self.wall()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    pub async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await
    }

    pub async fn sleep_until(&self, t: Instant) {
        tokio::time::sleep_until(t).await
    }

    /// Run `fut` with a deadline `d` from now.
    pub async fn timeout<F: Future>(&self, d: Duration, fut: F) -> Result<F::Output, Elapsed> {
        tokio::time::timeout(d, fut).await.map_err(|_| Elapsed(d))
    }

    /// Run `fut` until the instant `deadline`.
    pub async fn timeout_at<F: Future>(
        &self,
        deadline: Instant,
        fut: F,
    ) -> Result<F::Output, Elapsed> {
        // madsim has no `timeout_at`; a relative timeout computed now is
        // equivalent because nothing else happens between the two lines.
        let d = deadline.saturating_duration_since(self.now());
        tokio::time::timeout(d, fut).await.map_err(|_| Elapsed(d))
    }

    /// A ticker that skips missed ticks instead of bursting to catch up
    /// (a stalled process should not fire ten pings at once on wake-up).
    pub fn interval(&self, period: Duration) -> tokio::time::Interval {
        let mut iv = tokio::time::interval(period);
        iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        iv
    }
}
