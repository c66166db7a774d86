//! The AsyncAPI 3.1 document of a service, from its handlers: written as JSON, YAML and
//! one HTML page, then checked against an older version of itself. No broker needed.
//!
//! ```sh
//! cargo run --example asyncapi           # writes target/asyncapi/email-service.{json,yaml,html}
//! eventrabbit contract diff old.json target/asyncapi/email-service.json   # in CI: exit 1 on a breaking change
//! ```

use eventrabbit::contract::AsyncApi;
use eventrabbit::{ConsumeChannel, ExchangeKind, consumer, function, producer};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Derive `JsonSchema` on payload types to document them exactly (doc comments become
/// descriptions); other types are documented as open objects.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct EmailSent {
    user_id: i64,
    /// The address it went to.
    email: String,
    status: Status,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Status {
    Sent,
    Bounced,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct UserCreated {
    user_id: i64,
    name: String,
}

/// Documented as: receives SEND_EMAIL on `email_queue` (`user_id` and `email` required,
/// `locale` optional), replies `EmailSent` to RPC callers and publishes it as EMAIL_SENT.
#[function(action = "SEND_EMAIL", exchange = "email", action_reply = "EMAIL_SENT")]
async fn send_email(user_id: i64, email: String, locale: Option<String>) -> EmailSent {
    let _ = locale;
    EmailSent {
        user_id,
        email,
        status: Status::Sent,
    }
}

#[consumer(action = "USER_CREATED")]
async fn on_user_created(#[data] user: UserCreated) {
    println!("welcome, {}", user.name);
}

#[producer(exchange = "user", action = "USER_CREATED")]
async fn create_user(user_id: i64, name: String) -> UserCreated {
    UserCreated { user_id, name }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let document = AsyncApi::new("email-service", "1.0.0")
        .description("Sends the shop's emails and welcomes new users.")
        .server("local", "127.0.0.1:5672")
        .consumes(
            ConsumeChannel::new("email_queue")
                .exchange("user", ExchangeKind::Fanout)
                .actions(["SEND_EMAIL", "USER_CREATED"]),
        )
        .build()?;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/asyncapi");
    std::fs::create_dir_all(&dir)?;
    for (ext, text) in [
        ("json", document.to_json()),
        ("yaml", document.to_yaml()),
        ("html", document.to_html()),
    ] {
        let path = dir.join(format!("email-service.{ext}"));
        std::fs::write(&path, text)?;
        println!("wrote {}", path.display());
    }
    // What the next version must not break: here, itself.
    let changes = document.breaking_changes(&document);
    println!("breaking changes against itself: {}", changes.len());
    let _ = create_user;
    Ok(())
}
