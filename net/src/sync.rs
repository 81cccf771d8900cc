//! Synchronisation with a deterministic wake order.
//!
//! tokio's `watch` channel spreads its waiters over several internal
//! notifiers picked with tokio's thread-local random generator, whose seed
//! depends on process-global state. Inside the simulator that makes the
//! order in which woken tasks become ready differ between two runs of one
//! seed (found by the determinism test: the same seed diverged right after
//! a process kill woke every task of the killed scope). [`Watch`] keeps
//! waiters in one FIFO `Notify`, so wake order follows registration order.

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

struct Inner<T> {
    value: Mutex<T>,
    changed: Notify,
}

/// A shared value that tasks can wait on. Clones share the value.
pub struct Watch<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for Watch<T> {
    fn clone(&self) -> Self {
        Watch {
            inner: self.inner.clone(),
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Watch<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Watch")
            .field(&*self.inner.value.lock().expect("watch lock"))
            .finish()
    }
}

impl<T: Clone> Watch<T> {
    pub fn new(value: T) -> Self {
        Watch {
            inner: Arc::new(Inner {
                value: Mutex::new(value),
                changed: Notify::new(),
            }),
        }
    }

    pub fn get(&self) -> T {
        self.inner.value.lock().expect("watch lock").clone()
    }

    /// Read without cloning.
    pub fn with<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        f(&self.inner.value.lock().expect("watch lock"))
    }

    pub fn set(&self, value: T) {
        self.modify(|v| *v = value);
    }

    /// Change the value in place and wake every waiter.
    pub fn modify(&self, f: impl FnOnce(&mut T)) {
        f(&mut self.inner.value.lock().expect("watch lock"));
        self.inner.changed.notify_waiters();
    }

    /// Wait until `pred` holds and return the value that satisfied it.
    /// Waits forever otherwise: callers put a deadline around it.
    pub async fn wait_for(&self, pred: impl Fn(&T) -> bool) -> T {
        loop {
            // Register before checking, so a change between the check and
            // the await is not missed (a `Notified` receives
            // `notify_waiters` from the moment it is created).
            let notified = self.inner.changed.notified();
            {
                let v = self.inner.value.lock().expect("watch lock");
                if pred(&v) {
                    return v.clone();
                }
            }
            notified.await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Unit tests run on tokio's paused clock; the ban guards daemon code.
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn waiters_see_changes_and_wake_in_registration_order() {
        let w = Watch::new(0u32);
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..8 {
            let (w, order) = (w.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let v = w.wait_for(|v| *v >= 2).await;
                order.lock().unwrap().push(i);
                v
            }));
            // Let task i register before task i+1.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        w.set(1);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(order.lock().unwrap().is_empty());
        w.modify(|v| *v += 1);
        for t in tasks {
            assert_eq!(t.await.unwrap(), 2);
        }
        assert_eq!(*order.lock().unwrap(), (0..8).collect::<Vec<_>>());
        // Already true: returns at once.
        assert_eq!(w.wait_for(|v| *v == 2).await, 2);
    }
}
