//! [`Reopen`]: state opened on first use and opened again once it died, with one opening
//! at a time. The connection, the publisher's channels and the RPC channel are all one.

use crate::error::Result;
use parking_lot::RwLock;
use std::future::Future;
use std::sync::Arc;

/// Something that can die: a connection or a channel.
pub(crate) trait Live {
    /// Whether it can still be used.
    fn is_live(&self) -> bool;
}

impl Live for lapin::Connection {
    fn is_live(&self) -> bool {
        self.status().connected()
    }
}

impl Live for lapin::Channel {
    fn is_live(&self) -> bool {
        self.status().connected()
    }
}

/// A value opened on demand and reopened when it died.
///
/// Reading the current value takes a lock held only for a moment (never across an await),
/// so asking whether it is open never waits on an opening in progress.
#[derive(Debug)]
pub(crate) struct Reopen<T> {
    current: RwLock<Option<Arc<T>>>,
    /// Held while a value is being opened, so only one opening runs at a time.
    opening: tokio::sync::Mutex<()>,
}

impl<T: Live> Default for Reopen<T> {
    fn default() -> Self {
        Self {
            current: RwLock::new(None),
            opening: tokio::sync::Mutex::new(()),
        }
    }
}

impl<T: Live> Reopen<T> {
    /// The current value, if it is alive. Never waits.
    pub(crate) fn live(&self) -> Option<Arc<T>> {
        self.current
            .read()
            .as_ref()
            .filter(|v| v.is_live())
            .cloned()
    }

    /// The current value if alive, else one made by `open` (which also runs only after
    /// any opening in progress ended without producing a live value).
    pub(crate) async fn get_or_open<F, Fut>(&self, open: F) -> Result<Arc<T>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Arc<T>>>,
    {
        if let Some(v) = self.live() {
            return Ok(v);
        }
        let _opening = self.opening.lock().await;
        // Another opening may have succeeded while this one waited its turn.
        if let Some(v) = self.live() {
            return Ok(v);
        }
        let v = open().await?;
        *self.current.write() = Some(v.clone());
        Ok(v)
    }

    /// Takes the current value out, alive or not: the next use opens a new one.
    pub(crate) fn take(&self) -> Option<Arc<T>> {
        self.current.write().take()
    }

    /// Takes the current value out only if it is `which` (it was not replaced meanwhile).
    pub(crate) fn take_if(&self, which: &Arc<T>) -> Option<Arc<T>> {
        let mut current = self.current.write();
        match current.as_ref() {
            Some(v) if Arc::ptr_eq(v, which) => current.take(),
            _ => None,
        }
    }

    /// Waits for an opening in progress to end, then takes the current value out.
    pub(crate) async fn take_after_opening(&self) -> Option<Arc<T>> {
        let _opening = self.opening.lock().await;
        self.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    struct Flag(AtomicBool);

    impl Live for Flag {
        fn is_live(&self) -> bool {
            self.0.load(Ordering::SeqCst)
        }
    }

    #[tokio::test]
    async fn opens_once_and_again_after_death() {
        let reopen = Reopen::<Flag>::default();
        let opened = AtomicUsize::new(0);
        let open = || async {
            opened.fetch_add(1, Ordering::SeqCst);
            Ok(Arc::new(Flag(AtomicBool::new(true))))
        };
        let first = reopen.get_or_open(open).await.unwrap();
        let again = reopen.get_or_open(open).await.unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(opened.load(Ordering::SeqCst), 1);
        first.0.store(false, Ordering::SeqCst);
        assert!(reopen.live().is_none());
        let second = reopen.get_or_open(open).await.unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(opened.load(Ordering::SeqCst), 2);
        // Only the value itself is taken: a stale handle leaves the new one in place.
        assert!(reopen.take_if(&first).is_none());
        assert!(reopen.take_if(&second).is_some());
        assert!(reopen.live().is_none());
    }
}
