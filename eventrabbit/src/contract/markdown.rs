//! The Markdown of descriptions, as HTML: paragraphs, lists, headings, code blocks, and
//! inline code, bold, emphasis and links. Everything else is text, escaped; a link goes
//! only to `http(s):`, `mailto:` or an anchor of the page.

/// How deep emphasis may nest before the rest is text (no input can exhaust the stack).
const MAX_NESTING: usize = 4;

/// Escapes text for HTML.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        push_escaped(&mut out, c);
    }
    out
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        '"' => out.push_str("&quot;"),
        '\'' => out.push_str("&#39;"),
        c => out.push(c),
    }
}

/// `text` as blocks: paragraphs (blank-line separated), `-`/`*` lists, `#` headings and
/// fenced or indented code.
pub(crate) fn block(text: &str) -> String {
    let text = text.replace("\r\n", "\n");
    let mut out = String::new();
    for part in text.split("\n\n") {
        let part = part.trim_matches('\n');
        if part.trim().is_empty() {
            continue;
        }
        let lines: Vec<&str> = part.lines().collect();
        if let Some(code) = part
            .strip_prefix("```")
            .map(|rest| rest.split_once('\n').map_or("", |(_, body)| body))
        {
            let code = code.trim_end().trim_end_matches("```");
            out.push_str(&format!("<pre><code>{}</code></pre>", escape(code)));
        } else if lines.iter().all(|l| l.starts_with("    ")) {
            let code: Vec<&str> = lines.iter().map(|l| &l[4..]).collect();
            out.push_str(&format!(
                "<pre><code>{}</code></pre>",
                escape(&code.join("\n"))
            ));
        } else if lines
            .iter()
            .all(|l| l.starts_with("- ") || l.starts_with("* "))
        {
            out.push_str("<ul>");
            for l in lines {
                out.push_str(&format!("<li>{}</li>", inline(&l[2..])));
            }
            out.push_str("</ul>");
        } else if let Some(heading) = part.strip_prefix('#') {
            let heading = heading.trim_start_matches('#').trim();
            out.push_str(&format!("<h4>{}</h4>", inline(heading)));
        } else {
            out.push_str(&format!("<p>{}</p>", inline(&lines.join(" "))));
        }
    }
    out
}

/// `text` on one line: `code`, **bold**, *emphasis*, [links](https://..).
pub(crate) fn inline(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    inline_into(&mut out, text, 0);
    out
}

fn inline_into(out: &mut String, text: &str, depth: usize) {
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if let Some((html, after)) = span(rest, depth) {
            out.push_str(&html);
            rest = after;
            continue;
        }
        push_escaped(out, c);
        rest = &rest[c.len_utf8()..];
    }
}

/// The inline span `rest` starts with, as HTML, and what follows it.
fn span(rest: &str, depth: usize) -> Option<(String, &str)> {
    if let Some(after) = rest.strip_prefix('`') {
        let end = after.find('`')?;
        return Some((
            format!("<code>{}</code>", escape(&after[..end])),
            &after[end + 1..],
        ));
    }
    if depth >= MAX_NESTING {
        return None;
    }
    if let Some(after) = rest.strip_prefix("**") {
        let end = after.find("**").filter(|&e| e > 0)?;
        let mut html = String::from("<strong>");
        inline_into(&mut html, &after[..end], depth + 1);
        html.push_str("</strong>");
        return Some((html, &after[end + 2..]));
    }
    if let Some(after) = rest.strip_prefix('*') {
        if after.starts_with(char::is_whitespace) || after.starts_with('*') {
            return None;
        }
        let end = after.find('*').filter(|&e| e > 0)?;
        let mut html = String::from("<em>");
        inline_into(&mut html, &after[..end], depth + 1);
        html.push_str("</em>");
        return Some((html, &after[end + 1..]));
    }
    if let Some(after) = rest.strip_prefix('[') {
        let close = after.find("](")?;
        let (label, tail) = (&after[..close], &after[close + 2..]);
        let end = tail.find(')')?;
        let url = &tail[..end];
        let safe = ["http://", "https://", "mailto:", "#"]
            .iter()
            .any(|p| url.starts_with(p));
        if !safe || url.contains(char::is_whitespace) {
            return None;
        }
        let mut html = format!("<a href=\"{}\">", escape(url));
        inline_into(&mut html, label, depth + 1);
        html.push_str("</a>");
        return Some((html, &tail[end + 1..]));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subset_renders_and_everything_else_is_text() {
        assert_eq!(
            inline("a `b<c>` **d** *e* [f](https://x.org/?a=1&b=2) <i>"),
            "a <code>b&lt;c&gt;</code> <strong>d</strong> <em>e</em> \
             <a href=\"https://x.org/?a=1&amp;b=2\">f</a> &lt;i&gt;"
        );
        assert_eq!(
            inline("[x](javascript:alert(1))"),
            "[x](javascript:alert(1))"
        );
        assert_eq!(inline("2 * 3 and user_id"), "2 * 3 and user_id");
        assert_eq!(
            block("# Title\n\nfirst\nline\n\n- one\n- `two`\n\n    code <x>"),
            "<h4>Title</h4><p>first line</p><ul><li>one</li><li><code>two</code></li></ul>\
             <pre><code>code &lt;x&gt;</code></pre>"
        );
    }

    #[test]
    fn no_input_panics_or_nests_without_bound() {
        let deep = "**".repeat(50_000) + "x" + &"**".repeat(50_000);
        let _ = inline(&deep);
        let _ = block(&"*[`€".repeat(10_000));
        for s in [
            "`", "**", "*", "[", "[a](", "[a](b", "€*€", "```", "```\n", "    ",
        ] {
            let _ = (inline(s), block(s));
        }
    }
}
