//! Keeping the password of an AMQP URL out of logs, errors, `Debug` output and the CLI:
//! one redactor for every place that shows a URL, also for URLs that do not parse.

/// `url` with its password replaced by `***`: `amqp://user:secret@host` →
/// `amqp://user:***@host`. Malformed URLs are redacted too (`amqp:user:secret@host`,
/// `user:secret@host`, a password holding `@` or `/`), and so is each URL of a
/// comma-separated list. Whatever stands between the scheme and the last `@` before the
/// host is the user information: everything after its first `:` is hidden.
///
/// ```
/// use eventrabbit::redact_url;
/// assert_eq!(redact_url("amqp://guest:s3cret@host/%2f"), "amqp://guest:***@host/%2f");
/// assert_eq!(redact_url("amqp:guest:s3cret@host"), "amqp:guest:***@host");
/// assert_eq!(redact_url("amqp://host/"), "amqp://host/");
/// ```
#[must_use]
pub fn redact_url(url: &str) -> String {
    split_urls(url)
        .map(|one| match userinfo(one) {
            Some((start, end)) => match one[start..end].find(':') {
                Some(colon) => format!("{}:***{}", &one[..start + colon], &one[end..]),
                None => one.to_owned(),
            },
            None => one.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The URLs of a comma-separated list: a comma followed by a scheme (`amqp`, any case)
/// starts the next URL; any other comma belongs to the URL (a password may hold one).
pub(crate) fn split_urls(urls: &str) -> impl Iterator<Item = &str> {
    let mut cuts = vec![0];
    for (i, _) in urls.match_indices(',') {
        let next = urls[i + 1..].trim_start();
        if next
            .get(..4)
            .is_some_and(|s| s.eq_ignore_ascii_case("amqp"))
        {
            cuts.push(i + 1);
        }
    }
    cuts.push(urls.len() + 1);
    cuts.windows(2)
        .map(move |w| &urls[w[0]..(w[1] - 1).min(urls.len())])
        .collect::<Vec<_>>()
        .into_iter()
}

/// `text` (an error naming `url`, or part of it) with every password of `url` (or of each
/// URL of a list) replaced by `***`, however the URL is written.
///
/// ```
/// use eventrabbit::redact_secrets;
/// let url = "amqp:guest:s3cret@host";
/// assert_eq!(redact_secrets("Invalid URL: 'amqp:guest:s3cret@host'", url), "Invalid URL: 'amqp:guest:***@host'");
/// ```
#[must_use]
pub fn redact_secrets(text: &str, url: &str) -> String {
    redact_text(&text, url)
}

/// [`redact_secrets`] of an error's text.
pub(crate) fn redact_text(e: &impl std::fmt::Display, url: &str) -> String {
    let mut text = e.to_string();
    for one in split_urls(url) {
        if let Some(p) = password(one)
            && !p.is_empty()
        {
            text = text.replace(p, "***");
        }
    }
    text
}

/// The byte range of the user information (`user:password`) of one URL, if it has any:
/// from after the scheme (`amqp://`, `amqp:`, `amqp:/`, or none) to the last `@`, behind
/// which the host is (a password may hold `@`, `/` or `?`).
fn userinfo(url: &str) -> Option<(usize, usize)> {
    let at = url.rfind('@')?;
    let prefix = &url[..at];
    let mut start = match prefix.find("://") {
        Some(i) => i + 3,
        None => ["amqps:", "amqp:"]
            .iter()
            .find(|scheme| {
                prefix
                    .get(..scheme.len())
                    .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
            })
            .map_or(0, |scheme| scheme.len()),
    };
    while prefix[start..].starts_with('/') {
        start += 1;
    }
    Some((start, at))
}

/// The password of one URL as a person reading it would see it (also when malformed).
pub(crate) fn password(url: &str) -> Option<&str> {
    let (start, end) = userinfo(url)?;
    let info = &url[start..end];
    Some(&info[info.find(':')? + 1..])
}

/// `text` with its `%XX` escapes decoded (as a URL parser reads a password); an escape
/// that is not one stays as written.
pub(crate) fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).and_then(|b| hex(*b)),
            bytes.get(i + 2).and_then(|b| hex(*b)),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_password() {
        assert_eq!(
            redact_url("amqp://guest:s3cret@host:5672/%2f"),
            "amqp://guest:***@host:5672/%2f"
        );
        assert_eq!(redact_url("amqps://u:p@q@h/v"), "amqps://u:***@h/v");
        assert_eq!(redact_url("amqp://host/"), "amqp://host/");
        assert_eq!(redact_url("amqp://user@host/"), "amqp://user@host/");
    }

    /// Malformed URLs, lists and odd passwords: the secret never survives.
    #[test]
    fn no_malformed_url_shows_its_password() {
        let secret = "s3cr/et?x#y";
        let cases = [
            format!("amqp:guest:{secret}@127.0.0.1:5672"),
            format!("amqp:/guest:{secret}@127.0.0.1:5672/%2f"),
            format!("guest:{secret}@127.0.0.1"),
            format!("amqp://guest:{secret}@127.0.0.1:5672/%2f"),
            format!("amqp://guest:{secret}@@127.0.0.1"),
            format!("amqp://a:b@h1,amqp://guest:{secret}@h2/%2f"),
            format!("amqp://guest:a,{secret}@h2/%2f"),
            format!("guest:{secret}@host:5672"),
            format!("amqps://guest:{secret}@h/v?heartbeat=5"),
            format!("AMQP://guest:{secret}@h"),
            format!("amqp://guest:{secret}@"),
        ];
        for url in &cases {
            let shown = redact_url(url);
            assert!(!shown.contains("s3cr"), "{url} -> {shown}");
            let text = redact_text(&format!("cannot parse {url}: bad"), url);
            assert!(!text.contains("s3cr"), "{url} -> {text}");
        }
        assert_eq!(
            redact_url("amqp:guest:pw@host:5672"),
            "amqp:guest:***@host:5672"
        );
        assert_eq!(
            redact_url("amqp://a:b@h1, amqp://c:d@h2"),
            "amqp://a:***@h1, amqp://c:***@h2"
        );
        assert_eq!(
            split_urls("amqp://a@h1,AMQPS://h2").collect::<Vec<_>>(),
            ["amqp://a@h1", "AMQPS://h2"]
        );
        assert_eq!(split_urls("amqp://u:a,b@h").count(), 1);
        // Multibyte characters where a scheme is looked for: no panic, still redacted.
        for url in [
            "amqp://u:s3cret@h,€€://x",
            "a€€:user:s3cret@h",
            "€€€:user:s3cret@h",
        ] {
            assert!(!redact_url(url).contains("s3cret"), "{url}");
        }
        assert_eq!(percent_decoded("a%40b%2"), "a@b%2");
    }
}
