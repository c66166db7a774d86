//! [`Chaos`]: the test broker delivering as a real broker may under trouble, from a seed:
//! duplicates, redeliveries after an ack lost to a dropped connection, and reordering
//! within the prefetch window. A test then shows whether its handlers are idempotent and
//! order-independent; a failing seed replays the same disorder.

use parking_lot::Mutex;

/// What disorder the test broker adds, and the seed it draws it from.
///
/// ```
/// use eventrabbit::testing::{Chaos, TestBroker};
/// let broker = TestBroker::new().with_chaos(
///     Chaos::seeded(7).duplicates(0.2).lost_acks(0.2).reorder(true),
/// );
/// # let _ = broker;
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Chaos {
    pub(crate) seed: u64,
    pub(crate) duplicates: f64,
    pub(crate) lost_acks: f64,
    pub(crate) reorder: bool,
}

impl Chaos {
    /// No disorder yet, drawn from `seed`; add some with the other methods.
    #[must_use]
    pub fn seeded(seed: u64) -> Self {
        Self {
            seed,
            duplicates: 0.0,
            lost_acks: 0.0,
            reorder: false,
        }
    }

    /// Every kind at once, at rates that show a handler's weaknesses in a few dozen
    /// messages: 20 % duplicates, 20 % lost acks, reordering.
    #[must_use]
    pub fn all(seed: u64) -> Self {
        Self::seeded(seed)
            .duplicates(0.2)
            .lost_acks(0.2)
            .reorder(true)
    }

    /// The share of deliveries delivered a second time, as a copy the broker got twice
    /// (a publisher that sent again after a lost confirm): `redelivered` unset.
    #[must_use]
    pub fn duplicates(mut self, rate: f64) -> Self {
        self.duplicates = rate.clamp(0.0, 1.0);
        self
    }

    /// The share of handled messages whose acknowledgement is lost with the connection:
    /// handled, then delivered again with `redelivered` set.
    #[must_use]
    pub fn lost_acks(mut self, rate: f64) -> Self {
        self.lost_acks = rate.clamp(0.0, 1.0);
        self
    }

    /// Deliver any of the messages within the queue's prefetch window next, not the first.
    #[must_use]
    pub fn reorder(mut self, on: bool) -> Self {
        self.reorder = on;
        self
    }

    /// The seed, to replay a run.
    #[must_use]
    pub fn seed(&self) -> u64 {
        self.seed
    }
}

/// What the disorder did in a run, to report with the seed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChaosReport {
    /// Deliveries duplicated.
    pub duplicated: usize,
    /// Handled messages delivered again after a lost ack.
    pub redelivered: usize,
    /// Deliveries taken out of order.
    pub reordered: usize,
}

/// The chaos in effect: its settings, its random stream and its counts.
#[derive(Debug)]
pub(crate) struct Disorder {
    pub(crate) chaos: Chaos,
    rng: Mutex<fastrand::Rng>,
    pub(crate) report: Mutex<ChaosReport>,
}

impl Disorder {
    pub(crate) fn new(chaos: Chaos) -> Self {
        Self {
            chaos,
            rng: Mutex::new(fastrand::Rng::with_seed(chaos.seed)),
            report: Mutex::default(),
        }
    }

    /// Which of the first `window` waiting messages goes next.
    pub(crate) fn pick(&self, waiting: usize, window: usize) -> usize {
        let window = window.min(waiting);
        if !self.chaos.reorder || window <= 1 {
            return 0;
        }
        let at = self.rng.lock().usize(..window);
        if at != 0 {
            self.report.lock().reordered += 1;
        }
        at
    }

    /// Whether this delivery is duplicated.
    pub(crate) fn duplicate(&self) -> bool {
        let hit = self.rng.lock().f64() < self.chaos.duplicates;
        if hit {
            self.report.lock().duplicated += 1;
        }
        hit
    }

    /// Whether this handled message's ack is lost.
    pub(crate) fn lose_ack(&self) -> bool {
        let hit = self.rng.lock().f64() < self.chaos.lost_acks;
        if hit {
            self.report.lock().redelivered += 1;
        }
        hit
    }
}
