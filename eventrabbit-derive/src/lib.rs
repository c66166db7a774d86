//! Attribute macros for [eventrabbit](https://docs.rs/eventrabbit).
//!
//! Use them through the `eventrabbit` crate (`use eventrabbit::{consumer, producer, function};`):
//! the code they generate refers to `::eventrabbit`, so this crate is not meant to be used alone.

#![deny(missing_docs)]

use proc_macro::TokenStream;

mod ast;
mod batch;
mod errors;
mod expand;
mod retry;
mod schema;
mod valid;

use ast::{Attr, MacroKind};
use errors::{Errors, error_with};
use quote::quote;

/// Registers an `async fn` as the handler of the messages whose `action` is given.
///
/// ```ignore
/// #[consumer(action = "USER_CREATED")]
/// async fn on_user_created(user_id: i64, name: String) -> Result<(), MyError> { Ok(()) }
/// ```
///
/// Parameters are filled from the message's `data` object by name. One parameter marked
/// `#[data]` may instead take the whole `data` as a `Deserialize` type, and one parameter
/// receives the delivery's context: its type is spelled `MessageContext` (any path ending
/// so, such as `eventrabbit::MessageContext`), or it is marked `#[context]` (for an alias
/// or a re-export under another name). The function may return `()`, any `T: Serialize`
/// (sent back when the message has a `reply_to`), or `Result<T, E>` with `E: Display`,
/// where `Err` is a failure that is retried, unless it is permanent: an
/// `eventrabbit::Rejected` (also inside a `std::error::Error`'s source chain) or an error
/// type implementing `eventrabbit::HandlerError` that says so is dead-lettered at once
/// with the code `rejected`.
///
/// `action` is an exact action or a pattern where `*` stands for any run of characters
/// (`"USER_*"`, `"user.*"`); an exact action beats a pattern, and the handler reads the
/// action it got from `MessageContext::action`.
///
/// `retry(max = 3, delay = "500ms", multiplier = 2, max_delay = "1m", jitter = true)` gives
/// the handler its own retry policy; keys left out keep the queue's values. Durations take
/// `ms`, `s`, `m` or `h`.
///
/// Generated code reaches the runtime through `::eventrabbit`; a crate that re-exports
/// eventrabbit under another path says so with `crate = "path::to::eventrabbit"` (all three
/// macros take it).
#[proc_macro_attribute]
pub fn consumer(attr: TokenStream, item: TokenStream) -> TokenStream {
    handler(MacroKind::Consumer, attr.into(), item.into()).into()
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
    handler(MacroKind::Function, attr.into(), item.into()).into()
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
/// With `mandatory = true`, a publish no queue receives fails with `Error::Unroutable`
/// (otherwise `Config::mandatory` decides).
///
/// A function returning `T` becomes one returning `eventrabbit::Result<T>`. One returning
/// `Result<T, E>` keeps its type, publishes only `Ok` values, and needs
/// `E: From<eventrabbit::Error>`. Works on free functions and on methods.
///
/// It publishes through the `build_event_dependencies` result made on the tokio runtime
/// it is called on (the newest, if several), else the newest anywhere.
#[proc_macro_attribute]
pub fn producer(attr: TokenStream, item: TokenStream) -> TokenStream {
    producer_impl(attr.into(), item.into()).into()
}

/// `#[consumer]` and `#[function]`: parse, validate, expand; on errors, the function as
/// written beside them.
fn handler(
    kind: MacroKind,
    attr: proc_macro2::TokenStream,
    item: proc_macro2::TokenStream,
) -> proc_macro2::TokenStream {
    let mut func: syn::ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(e) => return error_with(item, e),
    };
    let mut errors = Errors::default();
    let attr = Attr::parse(kind, attr, &mut errors);
    let spec = valid::handler(attr, &func, &mut errors);
    expand::strip_param_attrs(&mut func);
    match (errors.finish(), spec) {
        (Ok(()), Some(spec)) => expand::handler(&func, &spec),
        (Err(e), _) => error_with(quote!(#func), e),
        (Ok(()), None) => unreachable!("validation reports why it made no handler"),
    }
}

/// `#[producer]`: parse, validate, expand; on errors, the function as written beside them.
fn producer_impl(
    attr: proc_macro2::TokenStream,
    item: proc_macro2::TokenStream,
) -> proc_macro2::TokenStream {
    // `ImplItemFn` parses free fns and methods alike (a free fn is a method without `self`).
    let func: syn::ImplItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(e) => return error_with(item, e),
    };
    let mut errors = Errors::default();
    let attr = Attr::parse(MacroKind::Producer, attr, &mut errors);
    let spec = valid::producer(attr, &func, &mut errors);
    match (errors.finish(), spec) {
        (Ok(()), Some(spec)) => expand::producer(func, &spec),
        (Err(e), _) => error_with(item, e),
        (Ok(()), None) => unreachable!("validation reports why it made no producer"),
    }
}
