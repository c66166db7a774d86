//! The service's contract for other teams: its AsyncAPI 3.1 document, made from the
//! registered handlers and producers ([`AsyncApi`]), written as JSON, YAML or one HTML
//! page ([`AsyncApiDocument`]), and checked for breaking changes against another version
//! or a peer's document ([`BreakingChange`]).
//!
//! The `eventrabbit` command line compares two documents: `eventrabbit contract diff OLD
//! NEW` and `eventrabbit contract check PRODUCER CONSUMER` exit 1 on a breaking change,
//! naming each.

mod builder;
mod compat;
mod document;
mod example;
mod fields;
mod html;
mod ids;
mod markdown;
mod messages;
mod view;

pub use builder::AsyncApi;
pub use compat::BreakingChange;
pub use document::{AsyncApiDocument, DocumentError};
pub use messages::Role;
