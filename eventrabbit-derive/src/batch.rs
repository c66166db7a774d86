//! `batch(max = 100, window = "50ms")`: a handler taking a `Vec` of messages' data, parsed
//! and checked at compile time.

use crate::errors::Errors;
use crate::retry::duration_ms;
use proc_macro2::{Span, TokenStream};
use syn::parse::{ParseStream, Parser};
use syn::spanned::Spanned;
use syn::{Expr, Ident, Lit, Token};

const KEYS: [&str; 2] = ["max", "window"];

/// The largest batch: a batch waits in as many deliveries, so it is bounded by the prefetch
/// window (a `u16`).
const MAX_BATCH: usize = u16::MAX as usize;

/// The limits given in `batch(..)`.
pub(crate) struct BatchArgs {
    pub(crate) max: usize,
    pub(crate) window_ms: u64,
    pub(crate) span: Span,
}

impl BatchArgs {
    /// Parses the parenthesized contents of `batch(..)`; both keys are required.
    pub(crate) fn parse(input: ParseStream<'_>, errors: &mut Errors) -> syn::Result<Self> {
        let content;
        let paren = syn::parenthesized!(content in input);
        let mut max: Option<usize> = None;
        let mut window: Option<u64> = None;
        let mut given: Vec<String> = Vec::new();
        let parser = |input: ParseStream<'_>| {
            while !input.is_empty() {
                let key: Ident = input.parse()?;
                input.parse::<Token![=]>()?;
                let value: Expr = input.parse()?;
                let name = key.to_string();
                if !KEYS.contains(&name.as_str()) {
                    errors.push(
                        key.span(),
                        format!("unknown key `{name}` in `batch(..)`; valid keys are: max, window"),
                    );
                } else if given.contains(&name) {
                    errors.push(key.span(), format!("duplicate key `{name}` in `batch(..)`"));
                } else {
                    given.push(name.clone());
                    take(&name, &value, &mut max, &mut window, errors);
                }
                if input.is_empty() {
                    break;
                }
                input.parse::<Token![,]>()?;
            }
            Ok(())
        };
        parser.parse2(content.parse::<TokenStream>()?)?;
        for key in KEYS {
            if !given.iter().any(|g| g == key) {
                errors.push(
                    paren.span.join(),
                    format!(
                        "`batch(..)` needs `{key}`, e.g. `batch(max = 100, window = \"50ms\")`"
                    ),
                );
            }
        }
        Ok(BatchArgs {
            max: max.unwrap_or(1),
            window_ms: window.unwrap_or(0),
            span: paren.span.join(),
        })
    }
}

fn take(
    name: &str,
    value: &Expr,
    max: &mut Option<usize>,
    window: &mut Option<u64>,
    errors: &mut Errors,
) {
    let lit = match value {
        Expr::Lit(l) => Some(&l.lit),
        _ => None,
    };
    match (name, lit) {
        ("max", Some(Lit::Int(i))) => match i.base10_parse::<usize>() {
            Ok(n) if (1..=MAX_BATCH).contains(&n) => *max = Some(n),
            _ => errors.push(i.span(), format!("`max` must be 1 to {MAX_BATCH}")),
        },
        ("max", _) => errors.push(value.span(), "`max` takes an integer, e.g. `max = 100`"),
        ("window", Some(Lit::Str(s))) => match duration_ms(&s.value()) {
            Ok(0) => errors.push(s.span(), "`window` must be at least 1ms"),
            Ok(ms) => *window = Some(ms),
            Err(e) => errors.push(s.span(), format!("`window`: {e}")),
        },
        _ => errors.push(
            value.span(),
            "`window` takes a duration string, e.g. `window = \"50ms\"`",
        ),
    }
}
