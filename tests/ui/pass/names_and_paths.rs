// A parameter named like its handler, eventrabbit reached through a re-export, and the
// context recognised through an alias marked `#[context]`.
mod platform {
    pub use eventrabbit as events;
}

use eventrabbit::{consumer, function, producer};
use serde::Serialize;

type Ctx = eventrabbit::MessageContext;

#[derive(Serialize)]
struct Sent {
    email: String,
}

#[consumer(action = "N_EMAIL")]
async fn email(email: String) {
    let _ = email;
}

#[consumer(action = "N_CONTEXT")]
async fn with_alias(#[context] c: Ctx, user_id: i64) {
    let _ = (c.queue(), user_id);
}

#[consumer(action = "N_FULL_PATH")]
async fn full_path(ctx: eventrabbit::MessageContext) {
    let _ = ctx.retry_count();
}

#[consumer(action = "N_REEXPORTED", crate = "crate::platform::events")]
async fn reexported(n: i64) -> i64 {
    n
}

#[function(action = "N_SEND", exchange = "mail", crate = "platform::events")]
async fn send(send: String) -> Sent {
    Sent { email: send }
}

#[producer(exchange = "mail", action = "N_PRODUCED", crate = "platform::events")]
async fn produced(email: String) -> Sent {
    Sent { email }
}

fn main() {
    let _ = (email, with_alias, full_path, reexported, send);
    let _ = produced(String::new());
}
