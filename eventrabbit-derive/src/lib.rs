//! Attribute macros for [eventrabbit](https://docs.rs/eventrabbit).
//!
//! Use them through the `eventrabbit` crate (`use eventrabbit::{consumer, producer, function};`):
//! the code they generate refers to `::eventrabbit`, so this crate is not meant to be used alone.

use proc_macro::TokenStream;

mod attr;
mod handler;
mod producer;
mod sig;

/// Registers an `async fn` as the handler of the messages whose `action` is given.
///
/// ```ignore
/// #[consumer(action = "USER_CREATED")]
/// async fn on_user_created(user_id: i64, name: String) -> Result<(), MyError> { Ok(()) }
/// ```
///
/// Parameters are filled from the message's `data` object by name. One parameter marked
/// `#[data]` may instead take the whole `data` as a `Deserialize` type, and one parameter of
/// type `MessageContext` receives the delivery's context. The function may return `()`,
/// any `T: Serialize` (sent back when the message has a `reply_to`), or `Result<T, E>` with
/// `E: Display`, where `Err` is a failure that is retried.
#[proc_macro_attribute]
pub fn consumer(attr: TokenStream, item: TokenStream) -> TokenStream {
    handler::expand(handler::Kind::Consumer, attr.into(), item.into()).into()
}

/// A consumer whose result is also published to `exchange` under `action_reply`.
///
/// ```ignore
/// #[function(action = "SEND_EMAIL", exchange = "email", action_reply = "EMAIL_SENT")]
/// async fn send_email(user_id: i64, email: String) -> Result<EmailSent, MyError> { .. }
/// ```
///
/// `action_reply` defaults to `action` and `key` (the routing key) to `""`.
#[proc_macro_attribute]
pub fn function(attr: TokenStream, item: TokenStream) -> TokenStream {
    handler::expand(handler::Kind::Function, attr.into(), item.into()).into()
}

/// Calling the function runs its body, then publishes its result as `data` under `action`
/// to `exchange` with routing key `key` (default `""`), and returns the result once the
/// broker has confirmed the publish.
///
/// ```ignore
/// #[producer(exchange = "user", action = "USER_CREATED")]
/// async fn create_user(user_id: i64, name: String) -> UserCreated { .. }
/// // becomes: async fn create_user(..) -> eventrabbit::Result<UserCreated>
/// ```
///
/// A function returning `T` becomes one returning `eventrabbit::Result<T>`. One returning
/// `Result<T, E>` keeps its type, publishes only `Ok` values, and needs
/// `E: From<eventrabbit::Error>`. Works on free functions and on methods.
///
/// It publishes through the `build_event_dependencies` result made on the tokio runtime
/// it is called on (the newest, if several), else the newest anywhere.
#[proc_macro_attribute]
pub fn producer(attr: TokenStream, item: TokenStream) -> TokenStream {
    producer::expand(attr.into(), item.into()).into()
}
