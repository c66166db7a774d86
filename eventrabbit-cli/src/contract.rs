//! `eventrabbit contract`: AsyncAPI documents compared (between two versions of a
//! service, or a producer's and a consumer's) and rendered as a page. No broker needed.

use crate::Failure;
use eventrabbit::contract::{AsyncApiDocument, BreakingChange};
use std::path::Path;

/// Reads a document (JSON or YAML) from `path`; `-` is standard input.
fn read(path: &Path) -> Result<AsyncApiDocument, Failure> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    }
    .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display())))?;
    AsyncApiDocument::parse(&text).map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))
}

/// Prints each change; fails (exit 1) if there is one.
fn report(changes: &[BreakingChange], what: &str) -> Result<(), Failure> {
    if changes.is_empty() {
        println!("no breaking change: {what}");
        return Ok(());
    }
    for change in changes {
        println!("BREAKING {change}");
    }
    Err(Failure::Failed(format!(
        "{} breaking change{}: {what}",
        changes.len(),
        if changes.len() == 1 { "" } else { "s" }
    )))
}

/// Breaking changes from the service documented in `old` to the one in `new`.
pub(crate) fn diff(old: &Path, new: &Path) -> Result<(), Failure> {
    let (before, after) = (read(old)?, read(new)?);
    report(
        &before.breaking_changes(&after),
        &format!("{} -> {}", old.display(), new.display()),
    )
}

/// Mismatches between what `producer` sends and what `consumer` receives.
pub(crate) fn check(producer: &Path, consumer: &Path) -> Result<(), Failure> {
    let (p, c) = (read(producer)?, read(consumer)?);
    report(
        &p.mismatches_with(&c),
        &format!("{} sending to {}", producer.display(), consumer.display()),
    )
}

/// Writes the HTML page of `document` to `output` (or standard output).
pub(crate) fn html(document: &Path, output: Option<&Path>) -> Result<(), Failure> {
    let page = read(document)?.to_html();
    match output {
        None => {
            print!("{page}");
            Ok(())
        }
        Some(out) => std::fs::write(out, page)
            .map_err(|e| Failure::Failed(format!("cannot write {}: {e}", out.display()))),
    }
}
