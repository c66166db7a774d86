//! What the macros call: handler registration, the context a handler sees, how its
//! result becomes a reply, which handler serves which action, where producers publish,
//! the payload schemas registered beside them, and the application state handlers take.

pub(crate) mod batch;
pub(crate) mod context;
pub(crate) mod input;
pub(crate) mod middleware;
pub(crate) mod outcome;
pub(crate) mod pattern;
pub(crate) mod producers;
pub(crate) mod registration;
pub(crate) mod registry;
pub(crate) mod rejection;
pub(crate) mod schema;
