//! The two-backend harness shared by every suite that runs one test body
//! on each disk (this crate's conformance suite, the brick's): a scratch
//! POSIX directory removed when dropped, a fresh simulated disk, and a
//! macro that instantiates generic bodies for both. Test builds only
//! (feature `sim-disk`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::posix::PosixStorage;
use crate::sim::{SimDisk, SimStorage};

/// A scratch directory removed when dropped.
pub struct Scratch(pub PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A POSIX backend on a new scratch directory (keep the `Scratch` alive
/// while the backend is used).
///
/// # Panics
/// When the temporary directory cannot be made: the test cannot run.
pub fn posix() -> (PosixStorage, Scratch) {
    let dir = std::env::temp_dir().join(format!(
        "mortar-conformance-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let s = PosixStorage::open(&dir).expect("open the scratch directory");
    (s, Scratch(dir))
}

/// A brick directory on a new simulated disk (fixed seed).
///
/// # Panics
/// Never for a fresh disk; a panic means the simulated disk is broken.
pub fn sim() -> SimStorage {
    SimDisk::new(42)
        .storage("bricks/b1")
        .expect("a fresh simulated disk")
}

/// Instantiate generic test bodies (`fn name(s: impl Storage)`) as one
/// test per backend: `posix_backend::name` and `sim_backend::name`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod posix_backend {
            $(#[test] fn $name() {
                let (s, _keep) = $crate::testing::posix();
                super::$name(s);
            })*
        }
        mod sim_backend {
            $(#[test] fn $name() { super::$name($crate::testing::sim()); })*
        }
    };
}
