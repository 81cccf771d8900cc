//! The clock daemons use.
//!
//! It is a thin face over `tokio::time`, and that is the point: under the
//! ordinary build `tokio` is real tokio, under `--cfg madsim` it is
//! madsim-tokio whose time is simulated, and inside turmoil hosts tokio's
//! clock is paused and driven by the simulation. Daemons never read a clock
//! any other way, so the same code gets real or simulated time from how it
//! was built and started, not from anything it decides.

use std::future::Future;
use std::time::{Duration, SystemTime};

pub use tokio::time::Instant;

/// A deadline passed before the operation completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline of {0:?} passed")]
pub struct Elapsed(pub Duration);

#[derive(Debug, Clone, Default)]
pub struct Clock {
    _private: (),
}

impl Clock {
    pub fn new() -> Self {
        Clock { _private: () }
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
        SystemTime::now()
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
