//! Everything that talks to RabbitMQ through lapin: the connection and the channels
//! opened on it, confirmed publishing, RPC, the consumer loop and its acknowledgements,
//! topology, retries through wait queues and redrive. Implements the pipeline's
//! [`Transport`](crate::pipeline::transport::Transport).

pub(crate) mod ack;
pub(crate) mod client;
pub(crate) mod connection;
pub(crate) mod consumer;
pub(crate) mod deadlines;
pub(crate) mod delay;
pub(crate) mod delivery;
pub(crate) mod in_doubt;
pub(crate) mod lanes;
pub(crate) mod partitions;
pub(crate) mod publisher;
pub(crate) mod recording;
pub(crate) mod redrive;
pub(crate) mod reopen;
pub(crate) mod retry;
pub(crate) mod returns;
pub(crate) mod rpc;
pub(crate) mod topology;
pub(crate) mod transport;
pub(crate) mod unsettled;
