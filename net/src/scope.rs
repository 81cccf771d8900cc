//! Task scopes: a group of tasks that can be killed as a whole.
//!
//! A scope is what the simulator calls a process. A brick, an mgmtd or a
//! client runs all its tasks in one scope; killing the scope stops every one
//! of them at its next await point and drops what they own (sockets,
//! listeners, locks), which is how a process kill looks from outside. Scopes
//! nest: killing a scope kills its children.
//!
//! Cancellation is by racing each task against the scope's kill signal,
//! which works the same on tokio, madsim and turmoil, rather than through
//! runtime-specific abort handles.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::task::JoinHandle;

use crate::sync::Watch;

struct ScopeInner {
    name: String,
    killed: Watch<bool>,
    live_tasks: AtomicUsize,
    children: Mutex<Vec<Weak<ScopeInner>>>,
}

impl ScopeInner {
    fn kill(&self) {
        self.killed.set(true);
        let children = std::mem::take(&mut *self.children.lock().expect("scope lock"));
        for c in children.iter().filter_map(Weak::upgrade) {
            c.kill();
        }
    }
}

/// A killable group of tasks. Cloning gives another handle to the same scope.
#[derive(Clone)]
pub struct Scope {
    inner: Arc<ScopeInner>,
}

impl std::fmt::Debug for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope")
            .field("name", &self.inner.name)
            .field("killed", &self.is_killed())
            .field("live_tasks", &self.live_tasks())
            .finish()
    }
}

/// Counts a task as live until it is dropped, however it ends.
struct LiveGuard(Arc<ScopeInner>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.live_tasks.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Scope {
    pub fn new(name: impl Into<String>) -> Self {
        let killed = Watch::new(false);
        Scope {
            inner: Arc::new(ScopeInner {
                name: name.into(),
                killed,
                live_tasks: AtomicUsize::new(0),
                children: Mutex::new(Vec::new()),
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// A child scope: killed with this one, or on its own.
    pub fn child(&self, name: impl Into<String>) -> Scope {
        let child = Scope::new(format!("{}/{}", self.inner.name, name.into()));
        if self.is_killed() {
            child.kill();
            return child;
        }
        let mut children = self.inner.children.lock().expect("scope lock");
        // Drop handles to children that are gone so the list stays bounded
        // by the number of live child scopes.
        children.retain(|w| w.strong_count() > 0);
        children.push(Arc::downgrade(&child.inner));
        child
    }

    /// Spawn a task in this scope. The handle yields `None` if the scope was
    /// killed before the task finished.
    pub fn spawn<F>(&self, fut: F) -> JoinHandle<Option<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.inner.live_tasks.fetch_add(1, Ordering::AcqRel);
        let guard = LiveGuard(self.inner.clone());
        let killed = self.killed_signal();
        #[allow(clippy::disallowed_methods)] // The seam is the one door to spawning.
        tokio::spawn(async move {
            let _guard = guard;
            tokio::select! {
                biased;
                _ = killed => None,
                out = fut => Some(out),
            }
        })
    }

    /// Completes when the scope is killed.
    pub fn killed_signal(&self) -> impl Future<Output = ()> + Send + 'static {
        let killed = self.inner.killed.clone();
        async move {
            killed.wait_for(|k| *k).await;
        }
    }

    /// Stop every task in this scope and its children at their next await.
    pub fn kill(&self) {
        self.inner.kill();
    }

    pub fn is_killed(&self) -> bool {
        self.inner.killed.get()
    }

    /// Tasks spawned here that have not yet ended.
    pub fn live_tasks(&self) -> usize {
        self.inner.live_tasks.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn kill_stops_tasks_and_children() {
        let root = Scope::new("root");
        let child = root.child("c");
        let a = root.spawn(async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            1
        });
        let b = child.spawn(async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            2
        });
        let done = root.spawn(async { 3 });
        assert_eq!(done.await.unwrap(), Some(3));
        assert_eq!(root.live_tasks(), 1);
        root.kill();
        assert_eq!(a.await.unwrap(), None);
        assert_eq!(b.await.unwrap(), None);
        assert!(child.is_killed());
        assert_eq!(root.live_tasks(), 0);
        assert_eq!(child.live_tasks(), 0);
        // A task spawned into a dead scope never runs its body.
        let late = root.spawn(async { 4 });
        assert_eq!(late.await.unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn killing_a_child_spares_the_parent() {
        let root = Scope::new("root");
        let child = root.child("c");
        let p = root.spawn(async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            "parent"
        });
        let c = child.spawn(std::future::pending::<()>());
        child.kill();
        assert_eq!(c.await.unwrap(), None);
        assert_eq!(p.await.unwrap(), Some("parent"));
        assert!(!root.is_killed());
    }
}
