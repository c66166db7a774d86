//! The document as one self-contained HTML page: a table of contents, the servers, each
//! operation with its channel's bindings, headers and a table of its payload's fields,
//! the named schemas, descriptions rendered from Markdown; styles and a small filter
//! script inline, nothing fetched when it is viewed.

use super::fields;
use super::ids::deref;
use super::markdown::{block, escape, inline};
use super::view::{Operation, operations};
use serde_json::Value;
use std::fmt::Write as _;

const STYLE: &str = r#"
body { font: 15px/1.5 system-ui, sans-serif; margin: 0; color: #1d2330; background: #f6f7f9; }
header { background: #24324a; color: #fff; padding: 1.2rem 2rem; }
header h1 { margin: 0; font-size: 1.6rem; }
.layout { display: flex; align-items: flex-start; }
nav#toc { position: sticky; top: 0; width: 17rem; flex: none; max-height: 100vh; overflow-y: auto; padding: 1rem; box-sizing: border-box; font-size: 0.9rem; }
nav#toc ul { list-style: none; padding-left: 0.8rem; margin: 0.2rem 0; }
nav#toc > ul { padding-left: 0; }
nav#toc a { color: #24324a; text-decoration: none; }
main { padding: 1rem 2rem; max-width: 64rem; flex: 1; min-width: 0; }
section.operation, section.schema { background: #fff; border: 1px solid #dde1e7; border-radius: 6px; margin: 1rem 0; padding: 0.8rem 1.2rem; }
h2.action { margin: 0.2rem 0; font-family: ui-monospace, monospace; font-size: 1.2rem; }
h4 { margin: 0.8rem 0 0.3rem; }
.badge { display: inline-block; border-radius: 4px; padding: 0 0.5rem; font-size: 0.8rem; margin-right: 0.5rem; color: #fff; font-family: system-ui, sans-serif; }
.receive { background: #2f7d4f; } .send { background: #2a5db0; }
table { border-collapse: collapse; width: 100%; font-size: 0.9rem; margin: 0.3rem 0; }
th, td { border-bottom: 1px solid #e4e7ec; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f0f2f5; font-weight: 600; }
td.field { white-space: nowrap; } td.required { width: 5rem; }
table.facts th { width: 11rem; background: none; font-weight: normal; color: #566070; }
pre { background: #f0f2f5; padding: 0.6rem; overflow-x: auto; border-radius: 4px; font-size: 0.85rem; }
details summary { cursor: pointer; color: #2a5db0; margin: 0.3rem 0; }
.meta { color: #566070; } #filter { font-size: 1rem; padding: 0.3rem; width: 20rem; }
"#;

const SCRIPT: &str = r#"
(function () {
  var sections = Array.prototype.slice.call(document.querySelectorAll("section.operation"));
  var count = document.getElementById("count");
  function show() {
    var q = document.getElementById("filter").value.toLowerCase();
    var shown = 0;
    sections.forEach(function (s) {
      var hit = s.textContent.toLowerCase().indexOf(q) >= 0;
      s.style.display = hit ? "" : "none";
      var link = document.querySelector("nav#toc a[href='#" + s.id + "']");
      if (link) { link.parentNode.style.display = hit ? "" : "none"; }
      if (hit) { shown += 1; }
    });
    count.textContent = shown + " of " + sections.length + " operations";
  }
  document.getElementById("filter").addEventListener("input", show);
  show();
  document.body.setAttribute("data-ready", "yes");
})();
"#;

fn pretty(value: &Value) -> String {
    escape(&serde_json::to_string_pretty(value).unwrap_or_default())
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The page of `doc`.
pub(crate) fn page(doc: &Value) -> String {
    let (title, version) = (
        escape(text(doc, "/info/title")),
        escape(text(doc, "/info/version")),
    );
    let ops = operations(doc);
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} {version}: messages</title><style>{STYLE}</style></head><body>\
         <header><h1>{title} <small>{version}</small></h1>\
         <div>AsyncAPI {} · every message is a JSON envelope <code>{{\"action\": .., \"data\": {{..}}}}</code></div></header>\
         <div class=\"layout\">",
        escape(text(doc, "/asyncapi"))
    );
    contents(&mut html, doc, &ops);
    html.push_str("<main>");
    html.push_str(&block(text(doc, "/info/description")));
    html.push_str(
        "<p><input id=\"filter\" type=\"search\" placeholder=\"filter by action, queue, field\"> \
         <span id=\"count\" class=\"meta\"></span></p>",
    );
    servers(&mut html, doc);
    html.push_str("<h2 id=\"operations\">Operations</h2>");
    for op in &ops {
        section(&mut html, doc, op);
    }
    schemas(&mut html, doc);
    // The document itself, for tools reading the page (`<` only occurs in JSON strings,
    // where `\u003c` means the same and cannot end the script).
    let raw = serde_json::to_string(doc)
        .unwrap_or_default()
        .replace('<', "\\u003c");
    let _ = writeln!(
        html,
        "</main></div><script type=\"application/json\" id=\"asyncapi-document\">{raw}</script>\
         <script>{SCRIPT}</script></body></html>"
    );
    html
}

fn badge(receive: bool) -> (&'static str, &'static str) {
    if receive {
        ("receive", "receives")
    } else {
        ("send", "sends")
    }
}

/// The table of contents: servers, every operation, every named schema.
fn contents(html: &mut String, doc: &Value, ops: &[Operation<'_>]) {
    html.push_str("<nav id=\"toc\"><strong>Contents</strong><ul>");
    if doc
        .get("servers")
        .and_then(Value::as_object)
        .is_some_and(|s| !s.is_empty())
    {
        html.push_str("<li><a href=\"#servers\">Servers</a></li>");
    }
    html.push_str("<li><a href=\"#operations\">Operations</a><ul>");
    for op in ops {
        let (class, verb) = badge(op.receive);
        let _ = write!(
            html,
            "<li><a href=\"#op-{}\"><span class=\"badge {class}\">{verb}</span>{}</a></li>",
            escape(&op.id),
            escape(&op.action)
        );
    }
    html.push_str("</ul></li>");
    if let Some(schemas) = named_schemas(doc) {
        html.push_str("<li><a href=\"#schemas\">Schemas</a><ul>");
        for name in schemas.keys() {
            let _ = write!(
                html,
                "<li><a href=\"#schema-{0}\">{0}</a></li>",
                escape(name)
            );
        }
        html.push_str("</ul></li>");
    }
    html.push_str("</ul></nav>");
}

fn named_schemas(doc: &Value) -> Option<&serde_json::Map<String, Value>> {
    doc.pointer("/components/schemas")
        .and_then(Value::as_object)
        .filter(|s| !s.is_empty())
}

fn servers(html: &mut String, doc: &Value) {
    let Some(servers) = doc
        .get("servers")
        .and_then(Value::as_object)
        .filter(|s| !s.is_empty())
    else {
        return;
    };
    html.push_str(
        "<h2 id=\"servers\">Servers</h2><table class=\"servers\"><thead><tr><th>server</th>\
         <th>host</th><th>protocol</th><th>virtual host</th><th>description</th></tr></thead><tbody>",
    );
    for (name, server) in servers {
        let server = deref(doc, server);
        let _ = write!(
            html,
            "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{} {}</td><td>{}</td><td>{}</td></tr>",
            escape(name),
            escape(text(server, "/host")),
            escape(text(server, "/protocol")),
            escape(text(server, "/protocolVersion")),
            escape(text(server, "/pathname")),
            inline(text(server, "/description")),
        );
    }
    html.push_str("</tbody></table>");
}

/// A row of a facts table (`value` is HTML).
fn fact(html: &mut String, name: &str, value: &str) {
    if !value.is_empty() {
        let _ = write!(html, "<tr><th>{name}</th><td>{value}</td></tr>");
    }
}

fn code(text: &str) -> String {
    format!("<code>{}</code>", escape(text))
}

fn yes_no(value: Option<&Value>) -> String {
    match value.and_then(Value::as_bool) {
        Some(true) => "yes".to_owned(),
        Some(false) => "no".to_owned(),
        None => String::new(),
    }
}

/// What the operation's channel is on the broker: a queue (its settings, dead-letter
/// queue and bindings) or an exchange and routing key; how messages are acknowledged or
/// published.
fn channel_facts(html: &mut String, op: &Operation<'_>) {
    html.push_str("<table class=\"facts bindings\"><tbody>");
    fact(html, "operation id", &code(&op.id));
    for (key, label) in [
        ("x-eventrabbit-handler", "handler"),
        ("x-eventrabbit-producer", "producer"),
    ] {
        if let Some(name) = op.operation.get(key).and_then(Value::as_str) {
            fact(html, label, &code(name));
        }
    }
    if let Some(channel) = op.channel_value {
        let amqp = channel.pointer("/bindings/amqp");
        match amqp.and_then(|a| a.get("is")).and_then(Value::as_str) {
            Some("queue") => {
                let queue = amqp.and_then(|a| a.get("queue"));
                let name = queue.map_or("", |q| text(q, "/name"));
                fact(html, "queue", &code(name));
                fact(
                    html,
                    "durable",
                    &yes_no(queue.and_then(|q| q.get("durable"))),
                );
                fact(
                    html,
                    "exclusive",
                    &yes_no(queue.and_then(|q| q.get("exclusive"))),
                );
                fact(
                    html,
                    "auto-delete",
                    &yes_no(queue.and_then(|q| q.get("autoDelete"))),
                );
                if let Some(kind) = channel
                    .get("x-eventrabbit-queue-type")
                    .and_then(Value::as_str)
                {
                    fact(html, "queue type", &escape(kind));
                }
                fact(
                    html,
                    "dead-letter queue",
                    &format!(
                        "{} (the reason in the <code>x-dead-letter-reason</code> header)",
                        code(&format!("{name}.dlq"))
                    ),
                );
                let bound: Vec<String> = channel
                    .get("x-eventrabbit-bindings")
                    .and_then(Value::as_array)
                    .map(|bs| {
                        bs.iter()
                            .map(|b| {
                                let key = text(b, "/routingKey");
                                format!(
                                    "the {} exchange {}{}",
                                    escape(text(b, "/type")),
                                    code(text(b, "/exchange")),
                                    if key.is_empty() {
                                        String::new()
                                    } else {
                                        format!(", key {}", code(key))
                                    }
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                fact(html, "bound to", &bound.join("<br>"));
            }
            Some("routingKey") => {
                let exchange = amqp.and_then(|a| a.get("exchange"));
                let name = exchange.map_or("", |x| text(x, "/name"));
                fact(
                    html,
                    "exchange",
                    &code(if name.is_empty() { "(default)" } else { name }),
                );
                if let Some(kind) = exchange.and_then(|x| x.get("type")).and_then(Value::as_str) {
                    fact(html, "exchange type", &escape(kind));
                }
                // (An exchange's channel without a key is addressed by the exchange.)
                let key = if text(channel, "/title").contains("routing key") {
                    code(text(channel, "/address"))
                } else {
                    "<code>\"\"</code> (empty)".to_owned()
                };
                fact(html, "routing key", &key);
            }
            _ => fact(html, "channel", &escape(&op.channel)),
        }
    }
    let bindings = op.operation.pointer("/bindings/amqp");
    if bindings.and_then(|b| b.get("ack")).and_then(Value::as_bool) == Some(true) {
        fact(
            html,
            "acknowledgement",
            "after the handler returns (manual ack)",
        );
    }
    if let Some(mode) = bindings
        .and_then(|b| b.get("deliveryMode"))
        .and_then(Value::as_u64)
    {
        let words = if mode == 2 { "persistent" } else { "transient" };
        fact(html, "delivery mode", &format!("{mode} ({words})"));
    }
    if let Some(batch) = op.operation.get("x-eventrabbit-batch") {
        fact(
            html,
            "batches",
            &format!(
                "up to {} messages, waiting at most {} ms",
                batch.get("max").and_then(Value::as_u64).unwrap_or(0),
                batch.get("windowMs").and_then(Value::as_u64).unwrap_or(0)
            ),
        );
    }
    html.push_str("</tbody></table>");
    if let Some(channel) = op.channel_value {
        html.push_str(&block(text(channel, "/description")));
    }
}

/// A message's headers and correlation id.
fn message_facts(html: &mut String, doc: &Value, message: &Value) {
    if let Some(headers) = message.get("headers")
        && deref(doc, headers)
            .get("properties")
            .and_then(Value::as_object)
            .is_some_and(|p| !p.is_empty())
    {
        html.push_str("<h4>headers</h4>");
        html.push_str(&fields::table(doc, headers, "headers"));
    }
    if let Some(correlation) = message.get("correlationId") {
        let correlation = deref(doc, correlation);
        let _ = write!(
            html,
            "<h4>correlation id</h4><p>{} (<code>{}</code>)</p>",
            inline(text(correlation, "/description")),
            escape(text(correlation, "/location"))
        );
    }
}

fn section(html: &mut String, doc: &Value, op: &Operation<'_>) {
    let (class, verb) = badge(op.receive);
    let _ = write!(
        html,
        "<section class=\"operation\" id=\"op-{id}\"><h2 class=\"action\">\
         <span class=\"badge {class}\">{verb}</span>{action}</h2>\
         <div class=\"meta\">{channel}{summary}</div>",
        id = escape(&op.id),
        action = escape(&op.action),
        channel = escape(&op.channel),
        summary = if op.summary.is_empty() {
            String::new()
        } else {
            format!(" · {}", inline(&op.summary))
        },
    );
    channel_facts(html, op);
    if let Some(message) = op.message {
        html.push_str(&block(text(message, "/description")));
        message_facts(html, doc, message);
    }
    if let Some(data) = op.data {
        html.push_str("<h4>data</h4>");
        html.push_str(&fields::table(doc, data, "data"));
    }
    if let Some(example) = op.example {
        let _ = write!(
            html,
            "<details><summary>example message</summary><pre class=\"example\">{}</pre></details>",
            pretty(example)
        );
    }
    if let Some(reply) = op.reply {
        html.push_str("<h4>reply data (RPC)</h4>");
        if let Some(message) = op.reply_message {
            html.push_str(&block(text(message, "/description")));
            message_facts(html, doc, message);
        }
        html.push_str(&fields::table(doc, reply, "data"));
    }
    if let Some(example) = op.reply_example {
        let _ = write!(
            html,
            "<details><summary>example reply</summary><pre class=\"example\">{}</pre></details>",
            pretty(example)
        );
    }
    if let Some(data) = op.data {
        let _ = write!(
            html,
            "<details><summary>JSON Schema of <code>data</code></summary><pre class=\"schema\">{}</pre></details>",
            pretty(data)
        );
    }
    html.push_str("</section>");
}

fn schemas(html: &mut String, doc: &Value) {
    let Some(schemas) = named_schemas(doc) else {
        return;
    };
    html.push_str("<h2 id=\"schemas\">Schemas</h2>");
    for (name, schema) in schemas {
        let _ = write!(
            html,
            "<section class=\"schema\" id=\"schema-{0}\"><h3>{0}</h3>{1}{2}\
             <details><summary>JSON Schema</summary><pre>{3}</pre></details></section>",
            escape(name),
            block(text(schema, "/description")),
            fields::table(doc, schema, name),
            pretty(schema)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_the_document_is_escaped() {
        let doc = serde_json::json!({
            "asyncapi": "3.1.0",
            "info": {"title": "<script>alert(1)</script>", "version": "1",
                     "description": "**bold** and <b>not</b> [x](javascript:1)"},
            "operations": {"a": {"action": "receive", "title": "A&B", "channel": {"$ref": "#/channels/c"}}},
            "channels": {"c": {"address": "q</script>"}},
        });
        let page = page(&doc);
        assert!(!page.contains("<script>alert(1)"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)"));
        assert!(page.contains("A&amp;B"));
        assert!(page.contains("<strong>bold</strong> and &lt;b&gt;not&lt;/b&gt;"));
        assert!(!page.contains("href=\"javascript"), "{page}");
        assert!(
            !page.contains("q</script>"),
            "the embedded document cannot close its script"
        );
    }
}
