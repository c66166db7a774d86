//! The document as one self-contained HTML page: styles and a small filter script
//! inline, nothing fetched when it is viewed.

use super::view::{Operation, operations};
use serde_json::Value;
use std::fmt::Write as _;

const STYLE: &str = r#"
body { font: 15px/1.5 system-ui, sans-serif; margin: 0; color: #1d2330; background: #f6f7f9; }
header { background: #24324a; color: #fff; padding: 1.2rem 2rem; }
header h1 { margin: 0; font-size: 1.6rem; }
main { padding: 1rem 2rem; max-width: 70rem; }
section.operation { background: #fff; border: 1px solid #dde1e7; border-radius: 6px; margin: 1rem 0; padding: 0.8rem 1.2rem; }
h2.action { margin: 0.2rem 0; font-family: ui-monospace, monospace; font-size: 1.2rem; }
.badge { display: inline-block; border-radius: 4px; padding: 0 0.5rem; font-size: 0.8rem; margin-right: 0.5rem; color: #fff; }
.receive { background: #2f7d4f; } .send { background: #2a5db0; }
pre { background: #f0f2f5; padding: 0.6rem; overflow-x: auto; border-radius: 4px; font-size: 0.85rem; }
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
      if (hit) { shown += 1; }
    });
    count.textContent = shown + " of " + sections.length + " operations";
  }
  document.getElementById("filter").addEventListener("input", show);
  show();
  document.body.setAttribute("data-ready", "yes");
})();
"#;

/// Escapes text for HTML.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An example message under `title`.
fn example_block(html: &mut String, title: &str, example: &Value) {
    let _ = write!(
        html,
        "<h4>{title}</h4><pre class=\"example\">{}</pre>",
        pretty(example)
    );
}

fn pretty(value: &Value) -> String {
    escape(&serde_json::to_string_pretty(value).unwrap_or_default())
}

/// The page of `doc`.
pub(crate) fn page(doc: &Value) -> String {
    let text = |pointer: &str| doc.pointer(pointer).and_then(Value::as_str).unwrap_or("");
    let (title, version) = (escape(text("/info/title")), escape(text("/info/version")));
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} {version}: messages</title><style>{STYLE}</style></head><body>\
         <header><h1>{title} <small>{version}</small></h1>\
         <div>AsyncAPI {} · every message is a JSON envelope <code>{{\"action\": .., \"data\": {{..}}}}</code></div></header><main>",
        escape(text("/asyncapi"))
    );
    let description = text("/info/description");
    if !description.is_empty() {
        let _ = write!(html, "<p>{}</p>", escape(description));
    }
    html.push_str(
        "<p><input id=\"filter\" type=\"search\" placeholder=\"filter by action, queue, field\"> \
         <span id=\"count\" class=\"meta\"></span></p>",
    );
    for op in operations(doc) {
        section(&mut html, doc, &op);
    }
    if let Some(schemas) = doc
        .pointer("/components/schemas")
        .and_then(Value::as_object)
        && !schemas.is_empty()
    {
        html.push_str("<h2>Schemas</h2>");
        for (name, schema) in schemas {
            let _ = write!(
                html,
                "<h3 id=\"schema-{0}\">{0}</h3><pre>{1}</pre>",
                escape(name),
                pretty(schema)
            );
        }
    }
    // The document itself, for tools reading the page (`<` only occurs in JSON strings,
    // where `\u003c` means the same and cannot end the script).
    let raw = serde_json::to_string(doc)
        .unwrap_or_default()
        .replace('<', "\\u003c");
    let _ = writeln!(
        html,
        "</main><script type=\"application/json\" id=\"asyncapi-document\">{raw}</script>\
         <script>{SCRIPT}</script></body></html>"
    );
    html
}

/// A schema as shown: a named one linked to its definition and shown in full.
fn schema(html: &mut String, doc: &Value, heading: &str, schema: &Value) {
    let _ = write!(html, "<h4>{heading}</h4>");
    let named = schema
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.get("$ref"))
        .and_then(Value::as_str)
        .and_then(|r| {
            Some((
                r.strip_prefix("#/components/schemas/")?,
                doc.pointer(r.strip_prefix('#')?)?,
            ))
        });
    match named {
        Some((name, resolved)) => {
            let _ = write!(
                html,
                "<p>a <a href=\"#schema-{0}\"><code>{0}</code></a>:</p><pre class=\"schema\">{1}</pre>",
                escape(name),
                pretty(resolved)
            );
        }
        None => {
            let _ = write!(html, "<pre class=\"schema\">{}</pre>", pretty(schema));
        }
    }
}

fn section(html: &mut String, doc: &Value, op: &Operation<'_>) {
    let (class, verb) = if op.receive {
        ("receive", "receives")
    } else {
        ("send", "sends")
    };
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
            format!(" · {}", escape(&op.summary))
        },
    );
    if let Some(data) = op.data {
        schema(html, doc, "data", data);
    }
    if let Some(example) = op.example {
        example_block(html, "example", example);
    }
    if let Some(reply) = op.reply {
        schema(html, doc, "reply data (RPC)", reply);
    }
    if let Some(example) = op.reply_example {
        example_block(html, "reply example", example);
    }
    html.push_str("</section>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_the_document_is_escaped() {
        let doc = serde_json::json!({
            "asyncapi": "3.0.0",
            "info": {"title": "<script>alert(1)</script>", "version": "1"},
            "operations": {"a": {"action": "receive", "title": "A&B", "channel": {"$ref": "#/channels/c"}}},
            "channels": {"c": {"address": "q</script>"}},
        });
        let page = page(&doc);
        assert!(!page.contains("<script>alert(1)"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)"));
        assert!(page.contains("A&amp;B"));
        assert!(
            !page.contains("q</script>"),
            "the embedded document cannot close its script"
        );
    }
}
