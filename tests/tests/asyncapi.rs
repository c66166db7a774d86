//! The AsyncAPI document made from the handlers and producers of this test program:
//! valid against the official AsyncAPI 3.1 schema, complete (channels, bindings,
//! operations, replies, payload schemas, examples), the same in JSON and YAML, readable as
//! an HTML page in headless Chromium, and compared for breaking changes.

use eventrabbit::contract::{AsyncApi, AsyncApiDocument, Role};
use eventrabbit::{
    Binding, ConsumeChannel, ExchangeKind, MessageContext, consumer, function, producer,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Address {
    city: String,
    zip: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct EmailSent {
    message_id: String,
    /// When it left.
    sent_at: u64,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct UserCreated {
    user_id: i64,
    name: String,
}

/// A payload type without a JSON Schema.
#[derive(Debug, Deserialize)]
struct Opaque {
    #[allow(dead_code)]
    anything: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
struct Tick {
    #[allow(dead_code)]
    n: u32,
}

#[function(
    action = "API_SEND_EMAIL",
    exchange = "api_email",
    action_reply = "API_EMAIL_SENT"
)]
async fn api_send_email(
    user_id: i64,
    email: String,
    address: Option<Address>,
) -> Result<EmailSent, String> {
    let _ = (user_id, email, address);
    Ok(EmailSent {
        message_id: "m".into(),
        sent_at: 0,
    })
}

#[consumer(action = "API_USER_*")]
async fn api_on_user(#[data] user: UserCreated, context: MessageContext) {
    let _ = (user, context);
}

/// `#[data]` beside a named parameter: `data` is read as both.
#[consumer(action = "API_MIXED")]
async fn api_mixed(#[data] user: UserCreated, source: Option<String>) {
    let _ = (user, source);
}

#[consumer(action = "API_OPAQUE")]
async fn api_opaque(#[data] opaque: Opaque) {
    let _ = opaque;
}

#[consumer(action = "API_TICKS", batch(max = 10, window = "50ms"))]
async fn api_ticks(ticks: Vec<Tick>) {
    let _ = ticks;
}

#[producer(exchange = "api_user", action = "API_USER_CREATED")]
async fn api_create_user(user_id: i64, name: String) -> UserCreated {
    UserCreated { user_id, name }
}

/// Every action the document names (received, sent, published as a result).
const ACTIONS: [&str; 6] = [
    "API_SEND_EMAIL",
    "API_OPAQUE",
    "API_USER_*",
    "API_TICKS",
    "API_EMAIL_SENT",
    "API_USER_CREATED",
];

fn document() -> AsyncApiDocument {
    document_described("The handlers of the AsyncAPI test.")
}

/// The test's document, with `description`.
fn document_described(description: &str) -> AsyncApiDocument {
    AsyncApi::new("api-test-service", "2.1.0")
        .description(description)
        .server("local", "127.0.0.1:5672")
        .consumes(
            ConsumeChannel::new("api_email_queue")
                .actions(["API_SEND_EMAIL", "API_OPAQUE"])
                .exchange("api_requests", ExchangeKind::Fanout),
        )
        .consumes(
            ConsumeChannel::new("api_users")
                .actions(["API_USER_*", "API_TICKS", "API_MIXED"])
                .bind(Binding::topic("api_user", "user.#"))
                .quorum(),
        )
        .build()
        .expect("the document builds")
}

fn validator() -> jsonschema::Validator {
    let schema: Value =
        serde_json::from_str(include_str!("../fixtures/asyncapi-3.1.0.schema.json"))
            .expect("the official schema is JSON");
    jsonschema::draft7::new(&schema).expect("the official schema compiles")
}

fn errors(validator: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    validator
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[test]
fn the_document_validates_against_the_official_asyncapi_3_schema() {
    let doc = document();
    let validator = validator();
    let found = errors(&validator, doc.as_value());
    assert!(found.is_empty(), "{found:#?}\n{}", doc.to_json());
    // The check has teeth: a broken document is refused.
    let mut broken = doc.as_value().clone();
    broken["operations"]["api_send_email"]["action"] = json!("consume");
    assert!(!errors(&validator, &broken).is_empty());
}

#[test]
fn channels_bindings_and_operations_describe_the_service() {
    let doc = document();
    let v = doc.as_value();
    let queue = &v["channels"]["queue.api_email_queue"];
    assert_eq!(queue["address"], "api_email_queue");
    assert_eq!(queue["bindings"]["amqp"]["is"], "queue");
    assert_eq!(
        queue["x-eventrabbit-bindings"],
        json!([{"exchange": "api_requests", "type": "fanout", "routingKey": ""}])
    );
    assert_eq!(
        v["channels"]["queue.api_users"]["x-eventrabbit-queue-type"],
        "quorum"
    );
    assert_eq!(
        v["channels"]["exchange.api_user.user._"]["bindings"]["amqp"]["exchange"],
        json!({"name": "api_user", "type": "topic"})
    );
    assert_eq!(
        v["channels"]["exchange.api_user.user._"]["address"],
        "user.#"
    );
    // The producer's channel on the same exchange knows its kind too.
    assert_eq!(
        v["channels"]["exchange.api_user"]["bindings"]["amqp"]["exchange"]["type"],
        "topic"
    );
    // A received action, with its RPC reply.
    let op = &v["operations"]["api_send_email"];
    assert_eq!(op["action"], "receive");
    assert_eq!(op["channel"]["$ref"], "#/channels/queue.api_email_queue");
    assert_eq!(
        op["reply"]["address"]["location"],
        "$message.header#/reply_to"
    );
    assert_eq!(
        op["reply"]["messages"][0]["$ref"],
        "#/channels/replies.api_email_queue/messages/API_SEND_EMAIL.reply"
    );
    // The `#[function]`'s result and the `#[producer]`'s publish.
    let result = &v["operations"]["api_send_email.result"];
    assert_eq!(result["action"], "send");
    assert_eq!(result["channel"]["$ref"], "#/channels/exchange.api_email");
    let produced = &v["operations"]["api_create_user"];
    assert_eq!(produced["action"], "send");
    assert_eq!(produced["channel"]["$ref"], "#/channels/exchange.api_user");
    // Only the actions each queue serves are documented on it.
    let names: Vec<&str> = v["operations"]
        .as_object()
        .unwrap()
        .values()
        .map(|o| o["title"].as_str().unwrap())
        .collect();
    for action in ACTIONS {
        assert!(names.contains(&action), "{action} in {names:?}");
    }
    assert_eq!(
        v["operations"]["api_ticks"]["x-eventrabbit-batch"],
        json!({"max": 10, "windowMs": 50})
    );
}

#[test]
fn payload_schemas_come_from_the_handler_and_producer_types() {
    let doc = document();
    let v = doc.as_value();
    let message = |key: &str| v["components"]["messages"][key].clone();
    let send = message("API_SEND_EMAIL.received");
    assert_eq!(send["payload"]["required"], json!(["action", "data"]));
    assert_eq!(
        send["payload"]["properties"]["action"],
        json!({"type": "string", "const": "API_SEND_EMAIL"})
    );
    let data = &send["payload"]["properties"]["data"];
    assert_eq!(
        data["required"],
        json!(["user_id", "email"]),
        "Option parameters may be left out"
    );
    assert_eq!(data["properties"]["user_id"]["type"], "integer");
    assert_eq!(data["properties"]["email"]["type"], "string");
    let address = serde_json::to_string(&data["properties"]["address"]).unwrap();
    assert!(
        address.contains("#/components/schemas/Address"),
        "{address}"
    );
    let schema = &v["components"]["schemas"]["Address"];
    assert_eq!(schema["required"], json!(["city"]));
    // The reply and the published result carry the function's `Ok` type.
    let reply = message("API_SEND_EMAIL.reply");
    assert_eq!(
        reply["payload"]["properties"]["data"]["$ref"],
        "#/components/schemas/EmailSent"
    );
    assert_eq!(reply["x-eventrabbit-role"], Role::Reply.as_str());
    let sent = message("API_EMAIL_SENT.sent");
    assert_eq!(
        sent["payload"]["properties"]["data"]["$ref"],
        "#/components/schemas/EmailSent"
    );
    assert_eq!(
        v["components"]["schemas"]["EmailSent"]["properties"]["sent_at"]["description"],
        "When it left."
    );
    // `#[data]` takes the whole `data`; a pattern's action is a regex.
    let user = message("API_USER__.received");
    assert_eq!(
        user["payload"]["properties"]["data"]["$ref"],
        "#/components/schemas/UserCreated"
    );
    assert_eq!(
        user["payload"]["properties"]["action"]["pattern"],
        "^API_USER_.*$"
    );
    let mixed = &message("API_MIXED.received")["payload"]["properties"]["data"];
    assert_eq!(
        mixed["allOf"][0]["$ref"],
        "#/components/schemas/UserCreated"
    );
    assert_eq!(
        mixed["allOf"][1]["properties"]["source"]["type"],
        json!(["string", "null"])
    );
    // A batch handler's messages each carry one item.
    let ticks = message("API_TICKS.received");
    assert_eq!(
        ticks["payload"]["properties"]["data"]["$ref"],
        "#/components/schemas/Tick"
    );
    // A producer's payload is its return type.
    let created = message("API_USER_CREATED.sent");
    assert_eq!(
        created["payload"]["properties"]["data"]["$ref"],
        "#/components/schemas/UserCreated"
    );
    // A type without `JsonSchema` is documented as open, and says so.
    let opaque = &message("API_OPAQUE.received")["payload"]["properties"]["data"];
    assert_eq!(opaque["x-eventrabbit-no-schema"], true);
    assert!(
        opaque["description"].as_str().unwrap().contains("Opaque"),
        "{opaque}"
    );
    // Headers eventrabbit reads are documented.
    assert!(send["headers"]["properties"]["x-retry-count"].is_object());
    assert!(send["headers"]["properties"]["traceparent"].is_object());
}

#[test]
fn every_example_fits_its_own_payload_schema() {
    let doc = document();
    let v = doc.as_value();
    let messages = v["components"]["messages"].as_object().unwrap();
    assert!(messages.len() >= 8, "{}", messages.len());
    for (key, message) in messages {
        let example = &message["examples"][0]["payload"];
        assert!(!example.is_null(), "{key} has an example");
        // The payload schema, with the document's named schemas beside it for `$ref`s.
        let schema = json!({
            "definitions": {"payload": message["payload"]},
            "components": v["components"],
            "$ref": "#/definitions/payload",
        });
        let validator = jsonschema::draft7::new(&schema).expect("a payload schema compiles");
        let found = errors(&validator, example);
        assert!(
            found.is_empty(),
            "{key}: {example} does not fit: {found:#?}"
        );
    }
    let send = &messages["API_SEND_EMAIL.received"]["examples"][0]["payload"];
    assert_eq!(send["action"], "API_SEND_EMAIL");
    assert!(
        send["data"]["user_id"].is_i64() && send["data"]["address"]["city"].is_string(),
        "{send}"
    );
}

#[test]
fn json_and_yaml_are_the_same_document() {
    let doc = document();
    let yaml = doc.to_yaml();
    assert!(yaml.starts_with("asyncapi: 3.1.0"), "{}", &yaml[..80]);
    let from_yaml = AsyncApiDocument::parse(&yaml).expect("our YAML reads back");
    let from_json = AsyncApiDocument::parse(&doc.to_json()).expect("our JSON reads back");
    assert_eq!(from_yaml, doc);
    assert_eq!(from_json, doc);
    let parsed: Value = serde_yaml_ng::from_str(&yaml).unwrap();
    assert!(errors(&validator(), &parsed).is_empty());
    let e = AsyncApiDocument::parse("asyncapi: 2.6.0\ninfo: {}").unwrap_err();
    assert!(e.to_string().contains("2.6.0"), "{e}");
    assert!(AsyncApiDocument::parse("{not json").is_err());
}

#[test]
fn a_queue_naming_an_unknown_action_is_refused() {
    let e = AsyncApi::new("s", "1")
        .consumes(ConsumeChannel::new("api_q").actions(["API_NOBODY"]))
        .build()
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("API_NOBODY") && text.contains("api_q"),
        "{text}"
    );
}

#[test]
fn a_changed_handler_is_a_breaking_change_for_its_old_document() {
    let old = document();
    let mut value = old.as_value().clone();
    let data = &mut value["components"]["messages"]["API_SEND_EMAIL.received"]["payload"]["properties"]
        ["data"];
    data["required"] = json!(["user_id", "email", "locale"]);
    data["properties"]["locale"] = json!({"type": "string"});
    data["properties"]["user_id"] = json!({"type": "string"});
    let ops = value["operations"].as_object_mut().unwrap();
    ops.remove("api_opaque");
    let new = AsyncApiDocument::parse(&value.to_string()).unwrap();
    let changes: Vec<String> = old
        .breaking_changes(&new)
        .iter()
        .map(ToString::to_string)
        .collect();
    for expected in [
        "API_SEND_EMAIL (received): field `data.locale` is new and required",
        "API_SEND_EMAIL (received): field `data.user_id` changed type from integer to string",
        "API_OPAQUE (received): no longer received",
    ] {
        assert!(
            changes.iter().any(|c| c.starts_with(expected)),
            "{expected} in {changes:#?}"
        );
    }
    assert_eq!(changes.len(), 3, "{changes:#?}");
    assert!(old.breaking_changes(&old).is_empty());
    // This service's producer against its own consumer of the same action fits.
    assert!(old.mismatches_with(&old).is_empty());
}

/// Chromium, if installed (`.ci/run` installs it and sets `EVENTRABBIT_REQUIRE_CHROMIUM`).
fn chromium() -> Option<std::path::PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join(name))
                    .find(|p| p.is_file())
            })
        });
    if found.is_none() {
        assert!(
            std::env::var_os("EVENTRABBIT_REQUIRE_CHROMIUM").is_none(),
            "EVENTRABBIT_REQUIRE_CHROMIUM is set but no chromium is on PATH (apt-get install chromium)"
        );
        eprintln!("SKIPPED: no chromium on PATH; `.ci/run` installs it and runs this test");
    }
    found
}

/// Runs headless Chromium on `page` with `args`; its stdout.
fn chromium_run(
    chromium: &std::path::Path,
    dir: &std::path::Path,
    page: &std::path::Path,
    args: &[&str],
) -> String {
    let output = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            // No network at view time: any fetch would fail.
            "--proxy-server=127.0.0.1:9",
            &format!("--user-data-dir={}", dir.join("profile").display()),
        ])
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
        + "\n<!-- stderr -->\n"
        + &String::from_utf8_lossy(&output.stderr)
}

/// The page in headless Chromium (issue 34, item 4): its script runs; it has a table of
/// contents linking every operation, the servers, every action as an operation heading
/// with its channel's bindings (exchange kind, durability, dead-letter queue), its
/// headers, and a row for every field of every payload (nested ones and named schemas
/// expanded, named schemas linked); Markdown in descriptions is rendered. A screenshot of
/// the page is taken (kept at `target/tmp/asyncapi-page.png` for a person to look at).
#[test]
fn the_html_page_shows_every_action_and_field_in_headless_chromium() {
    let Some(chromium) = chromium() else { return };
    let doc = document_described(
        "The handlers of the AsyncAPI test: **every** action, see [the guide](https://example.org/guide).",
    );
    let dir = std::env::temp_dir().join(format!("eventrabbit-asyncapi-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("index.html");
    std::fs::write(&page, doc.to_html()).unwrap();
    let dom = chromium_run(&chromium, &dir, &page, &["--dump-dom"]);
    assert!(
        dom.contains("data-ready=\"yes\""),
        "the page's script ran in the browser: {dom}"
    );
    let value = doc.as_value();
    let operations = value["operations"].as_object().unwrap();
    assert!(
        dom.contains(&format!("{0} of {0} operations", operations.len())),
        "the script counted the operations: {dom}"
    );
    for action in ACTIONS {
        assert!(
            dom.contains(&format!("</span>{action}</h2>")),
            "{action} is shown as an operation heading"
        );
    }
    for id in operations.keys() {
        assert!(
            dom.contains(&format!("<a href=\"#op-{id}\">")),
            "the contents link {id}"
        );
        assert!(
            dom.contains(&format!("id=\"op-{id}\"")),
            "{id} has a section"
        );
    }
    // Every field of every payload has a row: (section, field) pairs.
    for (section, field) in [
        ("op-api_send_email", "user_id"),
        ("op-api_send_email", "email"),
        ("op-api_send_email", "address"),
        ("op-api_send_email", "address.city"),
        ("op-api_send_email", "address.zip"),
        ("op-api_send_email", "message_id"),
        ("op-api_send_email", "sent_at"),
        ("op-api_on_user", "user_id"),
        ("op-api_on_user", "name"),
        ("op-api_mixed", "source"),
        ("op-api_ticks", "n"),
        ("op-api_create_user", "name"),
        ("schema-Address", "city"),
    ] {
        let start = dom
            .find(&format!("id=\"{section}\""))
            .unwrap_or_else(|| panic!("{section}"));
        let end = dom[start..]
            .find("</section>")
            .map_or(dom.len(), |e| start + e);
        assert!(
            dom[start..end].contains(&format!("<td class=\"field\"><code>{field}</code></td>")),
            "{section} lists the field {field}"
        );
    }
    assert!(
        dom.contains("<a href=\"#schema-Address\"><code>Address</code></a>"),
        "named schemas are linked"
    );
    assert!(
        dom.contains("When it left."),
        "field descriptions are shown"
    );
    // Servers, bindings, headers, Markdown.
    assert!(dom.contains("id=\"servers\"") && dom.contains("<code>127.0.0.1:5672</code>"));
    assert!(
        dom.contains("<th>exchange type</th><td>fanout</td>")
            || dom.contains("the fanout exchange <code>api_requests</code>")
    );
    assert!(
        dom.contains("<code>api_email_queue.dlq</code>"),
        "the dead-letter queue"
    );
    assert!(dom.contains("<th>durable</th><td>yes</td>"));
    assert!(dom.contains("<th>queue type</th><td>quorum</td>"));
    assert!(
        dom.contains("<code>traceparent</code>"),
        "headers are listed"
    );
    assert!(
        dom.contains("AMQP property"),
        "the correlation id is the AMQP property"
    );
    assert!(
        dom.contains("<strong>every</strong>")
            && dom.contains("<a href=\"https://example.org/guide\">the guide</a>"),
        "Markdown is rendered"
    );
    assert!(
        dom.contains("<code>api_email_queue</code>"),
        "Markdown code in channel descriptions"
    );

    // The screenshot: a PNG of the first screen, kept for a person to look at.
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("asyncapi-page.png");
    let _ = std::fs::remove_file(&shot);
    let out = chromium_run(
        &chromium,
        &dir,
        &page,
        &[
            "--window-size=1280,1600",
            &format!("--screenshot={}", shot.display()),
        ],
    );
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot ({e}): {out}"));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(
        png.len() > 20_000,
        "a page with content, not a blank screen: {} bytes",
        png.len()
    );
    eprintln!("screenshot: {} ({} bytes)", shot.display(), png.len());
    let _ = std::fs::remove_dir_all(&dir);
}
