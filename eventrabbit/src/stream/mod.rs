//! Event logs (RabbitMQ streams) read through the stream protocol: our client of it, the
//! connection to the cluster's nodes, the
//! conversion of a stream message to the pipeline's message, retries in place, and the
//! consumer loop that keeps its position on the broker.

pub(crate) mod amqp1;
pub(crate) mod client;
pub(crate) mod connect;
pub(crate) mod consumer;
pub(crate) mod message;
