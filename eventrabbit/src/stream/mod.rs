//! Event logs (RabbitMQ streams) read through the stream protocol: the connection, the
//! conversion of a stream message to the pipeline's message, retries in place, and the
//! consumer loop that keeps its position on the broker.

pub(crate) mod amqp1;
pub(crate) mod connect;
pub(crate) mod consumer;
pub(crate) mod message;
