//! One watchdog over the deadlines of every publish in flight, instead of a timer per
//! publish.
//!
//! A tokio timer registered and cleared for every confirmed publish took about 640
//! instructions of each (registering it in the timer wheel, clearing it when the confirm
//! came first, which it nearly always does). Here a publish that has to wait puts its
//! deadline and waker in a table (one short lock), takes them out when it ends (another),
//! and between the two checks one atomic counter per poll. One task sleeps until the
//! earliest deadline in the table, wakes every waiter whose deadline has passed, and sleeps
//! again until the earliest one left. As every publish of a publisher has the same
//! timeout, later waiters have later deadlines: the task wakes about once per timeout, not
//! once per publish, and stops when no waiter is left.
//!
//! A waiter fails no later than its deadline plus the timer's tick (a millisecond) and
//! the time for its task to run.

use parking_lot::Mutex;
use slab::Slab;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Deadlines of one publisher's publishes, watched by one task.
pub(crate) struct Deadlines {
    shared: Arc<Shared>,
}

struct Shared {
    /// Where the watchdog runs.
    runtime: tokio::runtime::Handle,
    state: Mutex<State>,
    /// How many times the watchdog has expired waiters: a waiter looks for its own
    /// expiry (under the lock) only when this has moved since it last looked.
    sweeps: AtomicU64,
    /// Wakes the watchdog when a waiter's deadline comes before the one it sleeps until.
    kick: Notify,
}

#[derive(Default)]
struct State {
    waiters: Slab<Waiter>,
    /// When the watchdog wakes next, if it runs.
    wake_at: Option<Instant>,
    watchdog: Option<JoinHandle<()>>,
}

struct Waiter {
    deadline: Instant,
    waker: Waker,
    expired: bool,
}

/// The deadline passed before the future completed.
#[derive(Debug)]
pub(crate) struct Elapsed;

impl Deadlines {
    /// Deadlines watched by a task on `runtime`.
    pub(crate) fn new(runtime: tokio::runtime::Handle) -> Self {
        Self {
            shared: Arc::new(Shared {
                runtime,
                state: Mutex::default(),
                sweeps: AtomicU64::new(0),
                kick: Notify::new(),
            }),
        }
    }

    /// Runs `fut` until `deadline`: its output, or [`Elapsed`] once the deadline passed.
    pub(crate) fn within<F: Future>(&self, deadline: Instant, fut: F) -> Within<'_, F> {
        Within {
            fut,
            wait: Wait {
                shared: &self.shared,
                deadline,
                entry: None,
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// A future run until a deadline, from [`Deadlines::within`].
    pub(crate) struct Within<'a, F> {
        #[pin]
        fut: F,
        wait: Wait<'a>,
    }
}

impl<F: Future> Future for Within<'_, F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.fut.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        this.wait.poll_expired(cx).map(|()| Err(Elapsed))
    }
}

/// One waiter's place in the table, taken when it first has to wait.
struct Wait<'a> {
    shared: &'a Arc<Shared>,
    deadline: Instant,
    entry: Option<Entry>,
}

struct Entry {
    key: usize,
    /// Which waker the table holds (its data and vtable addresses), to see without the
    /// lock whether it is still current: compared, not cloned, which saves two atomic
    /// operations on the caller's task per publish. The table's clone keeps the data alive,
    /// so the addresses cannot be reused by another waker while the entry exists.
    waker: (usize, usize),
    /// `Shared::sweeps` when last checked.
    sweeps: u64,
}

/// What [`Entry::waker`] compares.
fn identity(waker: &Waker) -> (usize, usize) {
    (
        waker.data() as usize,
        std::ptr::from_ref(waker.vtable()) as usize,
    )
}

impl Wait<'_> {
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let shared = self.shared;
        let Some(entry) = &mut self.entry else {
            self.register(cx.waker());
            return Poll::Pending;
        };
        let sweeps = shared.sweeps.load(Ordering::Acquire);
        let waker_moved = entry.waker != identity(cx.waker());
        if sweeps == entry.sweeps && !waker_moved {
            return Poll::Pending;
        }
        let mut state = shared.state.lock();
        entry.sweeps = sweeps;
        let Some(waiter) = state.waiters.get_mut(entry.key) else {
            return Poll::Pending;
        };
        if waiter.expired {
            return Poll::Ready(());
        }
        if waker_moved {
            waiter.waker.clone_from(cx.waker());
            entry.waker = identity(cx.waker());
        }
        Poll::Pending
    }

    fn register(&mut self, waker: &Waker) {
        let shared = self.shared;
        let mut state = shared.state.lock();
        let key = state.waiters.insert(Waiter {
            deadline: self.deadline,
            waker: waker.clone(),
            expired: false,
        });
        self.entry = Some(Entry {
            key,
            waker: identity(waker),
            sweeps: shared.sweeps.load(Ordering::Acquire),
        });
        // On the connection's runtime, not the caller's: a caller's runtime may sit idle
        // (alive, not driven) after its last call, and every other caller's deadline
        // would wait for it. A watchdog whose runtime shut down is finished; a new one
        // takes over.
        if state.watchdog.as_ref().is_none_or(JoinHandle::is_finished) {
            state.wake_at = Some(self.deadline);
            state.watchdog = Some(shared.runtime.spawn(watchdog(shared.clone())));
        } else if state.wake_at.is_none_or(|at| self.deadline < at) {
            state.wake_at = Some(self.deadline);
            shared.kick.notify_one();
        }
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            let removed = self.shared.state.lock().waiters.try_remove(entry.key);
            // The wakers are dropped here, outside the lock.
            drop(removed);
        }
    }
}

/// Wakes the waiters whose deadline has passed; sleeps until the earliest deadline left;
/// stops when no waiter waits.
async fn watchdog(shared: Arc<Shared>) {
    let mut expired = Vec::new();
    loop {
        let next = {
            let mut state = shared.state.lock();
            let now = Instant::now();
            let mut next: Option<Instant> = None;
            for (_, waiter) in state.waiters.iter_mut().filter(|(_, w)| !w.expired) {
                if waiter.deadline <= now {
                    waiter.expired = true;
                    expired.push(waiter.waker.clone());
                } else {
                    next = Some(next.map_or(waiter.deadline, |n| n.min(waiter.deadline)));
                }
            }
            // Counted before any waiter is woken, so that a woken waiter sees it.
            if !expired.is_empty() {
                shared.sweeps.fetch_add(1, Ordering::AcqRel);
            }
            state.wake_at = next;
            if next.is_none() {
                state.watchdog = None;
            }
            next
        };
        for waker in expired.drain(..) {
            waker.wake();
        }
        let Some(next) = next else {
            return;
        };
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = shared.kick.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_future_past_its_deadline_fails_at_it() {
        let deadlines = Deadlines::new(tokio::runtime::Handle::current());
        let deadline = Instant::now() + Duration::from_millis(250);
        let out = deadlines
            .within(deadline, std::future::pending::<()>())
            .await;
        assert!(out.is_err(), "a pending future must fail at its deadline");
        let now = Instant::now();
        assert!(now >= deadline, "failed early, {:?} before", deadline - now);
        // The watchdog's timer ticks in milliseconds.
        let late = now - deadline;
        assert!(late <= Duration::from_millis(1), "failed {late:?} late");
    }

    #[tokio::test(start_paused = true)]
    async fn a_future_done_in_time_gives_its_output_and_leaves_no_waiter() {
        let deadlines = Deadlines::new(tokio::runtime::Handle::current());
        let slow = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            7
        };
        let out = deadlines
            .within(Instant::now() + Duration::from_secs(1), slow)
            .await;
        assert_eq!(out.ok(), Some(7));
        assert!(deadlines.shared.state.lock().waiters.is_empty());
        tokio::time::sleep(Duration::from_secs(2)).await;
        let state = deadlines.shared.state.lock();
        assert!(state.watchdog.is_none(), "the watchdog must stop when idle");
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_added_later_still_fires_first() {
        let deadlines = Arc::new(Deadlines::new(tokio::runtime::Handle::current()));
        let start = Instant::now();
        let late = tokio::spawn({
            let deadlines = deadlines.clone();
            async move {
                deadlines
                    .within(
                        start + Duration::from_secs(10),
                        std::future::pending::<()>(),
                    )
                    .await
                    .is_err()
            }
        });
        tokio::task::yield_now().await;
        let early = deadlines
            .within(
                start + Duration::from_millis(100),
                std::future::pending::<()>(),
            )
            .await;
        assert!(early.is_err());
        let waited = Instant::now() - start;
        assert!(
            waited < Duration::from_secs(1),
            "the early deadline waited for the late one ({waited:?})"
        );
        assert!(!late.is_finished());
        assert!(late.await.unwrap(), "the late deadline must fire too");
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_already_past_fails_at_once() {
        let deadlines = Deadlines::new(tokio::runtime::Handle::current());
        let start = Instant::now();
        let past = start - Duration::from_millis(50);
        let out = deadlines.within(past, std::future::pending::<()>()).await;
        assert!(out.is_err());
        assert_eq!(Instant::now(), start, "no time may pass");
    }

    /// The watchdog runs on the runtime the deadlines belong to (the connection's), not on
    /// whichever runtime happened to wait first: a runtime that waited first and then sits
    /// idle (alive, not driven) must not stop other runtimes' deadlines from firing.
    #[test]
    fn a_deadline_fires_while_the_runtime_that_waited_first_sits_idle() {
        let home = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let deadlines = Arc::new(Deadlines::new(home.handle().clone()));
        // A visiting runtime waits first (starting the watchdog, if it started it there)
        // and then stays alive without being driven.
        let visitor = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let quick = visitor.block_on(async {
            let soon = tokio::time::sleep(Duration::from_millis(10));
            deadlines
                .within(Instant::now() + Duration::from_secs(60), soon)
                .await
        });
        assert!(quick.is_ok());
        // Bounded, so that the test fails instead of hanging when the deadline never fires.
        let waited = home.block_on(async {
            let waiting = deadlines.within(
                Instant::now() + Duration::from_millis(200),
                std::future::pending::<()>(),
            );
            tokio::time::timeout(Duration::from_secs(10), waiting).await
        });
        assert!(
            matches!(waited, Ok(Err(Elapsed))),
            "the deadline did not fire while the first runtime sat idle"
        );
        drop(visitor);
    }

    struct Flag(std::sync::atomic::AtomicBool);

    impl std::task::Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// A waiter polled by another task after it registered (moved between tasks, or
    /// polled from a `select!` elsewhere) is woken through the new task's waker.
    #[tokio::test(start_paused = true)]
    async fn the_latest_waker_is_woken_at_the_deadline() {
        let deadlines = Deadlines::new(tokio::runtime::Handle::current());
        let deadline = Instant::now() + Duration::from_millis(100);
        let mut waiting = std::pin::pin!(deadlines.within(deadline, std::future::pending::<()>()));
        let first = Arc::new(Flag(false.into()));
        let second = Arc::new(Flag(false.into()));
        let first_waker = Waker::from(first.clone());
        let second_waker = Waker::from(second.clone());
        assert!(
            waiting
                .as_mut()
                .poll(&mut Context::from_waker(&first_waker))
                .is_pending()
        );
        assert!(
            waiting
                .as_mut()
                .poll(&mut Context::from_waker(&second_waker))
                .is_pending()
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(
            second.0.load(Ordering::SeqCst),
            "the current waker was not woken"
        );
        assert!(
            !first.0.load(Ordering::SeqCst),
            "a replaced waker was woken"
        );
        let polled = waiting
            .as_mut()
            .poll(&mut Context::from_waker(&second_waker));
        assert!(matches!(polled, Poll::Ready(Err(Elapsed))));
    }

    #[tokio::test(start_paused = true)]
    async fn many_waiters_each_fail_at_their_own_deadline() {
        let deadlines = Arc::new(Deadlines::new(tokio::runtime::Handle::current()));
        let start = Instant::now();
        let tasks: Vec<_> = (1..=50u64)
            .map(|i| {
                let deadlines = deadlines.clone();
                tokio::spawn(async move {
                    let deadline = start + Duration::from_millis(20 * i);
                    let out = deadlines
                        .within(deadline, std::future::pending::<()>())
                        .await;
                    (out.is_err(), Instant::now() - deadline)
                })
            })
            .collect();
        for task in tasks {
            let (failed, late) = task.await.unwrap();
            assert!(failed);
            assert!(late <= Duration::from_millis(1), "failed {late:?} late");
        }
        assert!(deadlines.shared.state.lock().waiters.is_empty());
    }
}
