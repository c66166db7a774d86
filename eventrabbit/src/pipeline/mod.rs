//! The transport-independent handling of one message: the decision taken before any
//! handler runs, the handler's run, and the settlement (reply, result, retry or dead
//! letter) through a [`Transport`](transport::Transport).

pub(crate) mod dead_reason;
pub(crate) mod decide;
pub(crate) mod failure;
pub(crate) mod failure_event;
pub(crate) mod handle;
pub(crate) mod in_place;
pub(crate) mod order_key;
pub(crate) mod policy;
pub(crate) mod redrive;
pub(crate) mod transport;
