//! Partitioned work shared by instances: [`member`] runs an instance's share of any
//! [`Partitioned`] work; [`queues`] is the partition queues of a [`Partitions`]
//! topology. (Partitioned event logs implement [`Partitioned`] in `api`, where the stream
//! readers are.)
//!
//! [`Partitions`]: crate::Partitions

pub(crate) mod member;
pub(crate) mod queues;

use crate::error::Result;
use futures_util::future::BoxFuture;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Work in `count` partitions, each held by one instance at a time as the exclusive
/// consumer of its lease queue.
pub(crate) trait Partitioned: Send + Sync + 'static {
    /// What health and logs call the whole.
    fn label(&self) -> String;
    /// How many partitions.
    fn count(&self) -> u16;
    /// The queue every live instance consumes, to count them.
    fn members_queue(&self) -> String;
    /// The queue whose exclusive consumer holds partition `index`.
    fn lease_queue(&self, index: u16) -> String;
    /// What health calls partition `index`'s consumer.
    fn slot_name(&self, index: u16) -> String;
    /// Declares every partition and lease queue (idempotent).
    fn declare(&self, ch: lapin::Channel) -> BoxFuture<'_, Result<()>>;
    /// Runs partition `index` until `stop`, holding its lease; ends once the lease is
    /// given up (after the handlers running on it), or refused (another instance has it).
    fn run(&self, index: u16, stop: CancellationToken) -> JoinHandle<Result<()>>;
    /// Fails as every partition would, before anything is taken.
    fn check(&self) -> Result<()>;
}
