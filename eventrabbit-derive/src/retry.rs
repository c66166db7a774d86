//! `retry(max = 3, delay = "500ms", multiplier = 2, max_delay = "1m", jitter = true)`: a
//! handler's own retry policy, parsed and checked at compile time. Keys not given keep
//! the queue's values.

use crate::errors::Errors;
use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::parse::{ParseStream, Parser};
use syn::spanned::Spanned;
use syn::{Expr, Ident, Lit, Token};

const KEYS: [&str; 5] = ["max", "delay", "multiplier", "max_delay", "jitter"];

/// The keys given in `retry(..)`, each checked.
#[derive(Default)]
pub(crate) struct RetrySpec {
    max: Option<u32>,
    delay_ms: Option<(u64, Span)>,
    multiplier: Option<f64>,
    max_delay_ms: Option<(u64, Span)>,
    jitter: Option<bool>,
}

impl RetrySpec {
    /// Parses the parenthesized contents of `retry(..)`.
    pub(crate) fn parse(input: ParseStream<'_>, errors: &mut Errors) -> syn::Result<Self> {
        let content;
        let paren = syn::parenthesized!(content in input);
        let mut spec = RetrySpec::default();
        let mut given: Vec<String> = Vec::new();
        let parser = |input: ParseStream<'_>| {
            while !input.is_empty() {
                let key: Ident = input.parse()?;
                input.parse::<Token![=]>()?;
                let value: Expr = input.parse()?;
                spec.take(&key, &value, &mut given, errors);
                if input.is_empty() {
                    break;
                }
                input.parse::<Token![,]>()?;
            }
            Ok(())
        };
        parser.parse2(content.parse::<TokenStream>()?)?;
        if given.is_empty() {
            errors.push(
                paren.span.join(),
                format!(
                    "`retry(..)` needs at least one of: {}; e.g. `retry(max = 3, delay = \"500ms\")`",
                    KEYS.join(", ")
                ),
            );
        }
        if let (Some((delay, _)), Some((max_delay, span))) = (spec.delay_ms, spec.max_delay_ms)
            && max_delay < delay
        {
            errors.push(span, "`max_delay` must not be shorter than `delay`");
        }
        Ok(spec)
    }

    fn take(&mut self, key: &Ident, value: &Expr, given: &mut Vec<String>, errors: &mut Errors) {
        let name = key.to_string();
        if !KEYS.contains(&name.as_str()) {
            return errors.push(
                key.span(),
                format!(
                    "unknown key `{name}` in `retry(..)`; valid keys are: {}",
                    KEYS.join(", ")
                ),
            );
        }
        if given.contains(&name) {
            return errors.push(key.span(), format!("duplicate key `{name}` in `retry(..)`"));
        }
        given.push(name.clone());
        let lit = match value {
            Expr::Lit(l) => Some(&l.lit),
            _ => None,
        };
        match (name.as_str(), lit) {
            ("max", Some(Lit::Int(i))) => match i.base10_parse::<u32>() {
                Ok(n) => self.max = Some(n),
                Err(_) => errors.push(i.span(), "`max` is a number of retries (0 to 4294967295)"),
            },
            ("max", _) => errors.push(value.span(), "`max` takes an integer, e.g. `max = 3`"),
            ("delay" | "max_delay", Some(Lit::Str(s))) => match duration_ms(&s.value()) {
                Ok(0) => errors.push(s.span(), format!("`{name}` must be at least 1ms")),
                Ok(ms) if ms > i32::MAX as u64 => errors.push(
                    s.span(),
                    format!("`{name}` must be at most 24 days (the broker's TTL limit)"),
                ),
                Ok(ms) => {
                    let slot = if name == "delay" {
                        &mut self.delay_ms
                    } else {
                        &mut self.max_delay_ms
                    };
                    *slot = Some((ms, s.span()));
                }
                Err(e) => errors.push(s.span(), format!("`{name}`: {e}")),
            },
            ("delay" | "max_delay", _) => errors.push(
                value.span(),
                format!("`{name}` takes a duration string, e.g. `{name} = \"500ms\"`"),
            ),
            ("multiplier", Some(Lit::Int(i))) => match i.base10_parse::<f64>() {
                Ok(m) if m >= 1.0 => self.multiplier = Some(m),
                _ => errors.push(i.span(), "`multiplier` must be 1 or more"),
            },
            ("multiplier", Some(Lit::Float(f))) => match f.base10_parse::<f64>() {
                Ok(m) if m >= 1.0 && m.is_finite() => self.multiplier = Some(m),
                _ => errors.push(f.span(), "`multiplier` must be 1 or more"),
            },
            ("multiplier", _) => errors.push(
                value.span(),
                "`multiplier` takes a number, e.g. `multiplier = 2` or `1.5`",
            ),
            ("jitter", Some(Lit::Bool(b))) => self.jitter = Some(b.value),
            _ => errors.push(value.span(), "`jitter` takes `true` or `false`"),
        }
    }

    /// The `RetryOverride` the registration carries.
    pub(crate) fn expand(&self, private: &TokenStream) -> TokenStream {
        let opt = |v: Option<TokenStream>| match v {
            Some(v) => quote!(::core::option::Option::Some(#v)),
            None => quote!(::core::option::Option::None),
        };
        let max = opt(self.max.map(|n| quote!(#n)));
        let dur = |v: Option<(u64, Span)>| {
            opt(v.map(|(ms, _)| quote!(::core::time::Duration::from_millis(#ms))))
        };
        let delay = dur(self.delay_ms);
        let max_delay = dur(self.max_delay_ms);
        let multiplier = opt(self.multiplier.map(|m| quote!(#m)));
        let jitter = opt(self.jitter.map(|j| quote!(#j)));
        quote! {
            #private::RetryOverride {
                max_retries: #max,
                delay: #delay,
                multiplier: #multiplier,
                max_delay: #max_delay,
                jitter: #jitter,
            }
        }
    }
}

/// `"500ms"`, `"2s"`, `"1.5s"`, `"1m"`, `"1h"` in milliseconds.
pub(crate) fn duration_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| {
            format!("`{text}` has no unit: write e.g. \"500ms\", \"2s\", \"1m\", \"1h\"")
        })?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` does not start with a number"))?;
    let factor = match unit.trim() {
        "ms" => 1.0,
        "s" => 1_000.0,
        "m" | "min" => 60_000.0,
        "h" => 3_600_000.0,
        other => return Err(format!("unknown unit `{other}`: use ms, s, m or h")),
    };
    let ms = number * factor;
    if ms.fract() != 0.0 {
        return Err(format!("`{text}` is not a whole number of milliseconds"));
    }
    Ok(ms as u64)
}

#[cfg(test)]
mod tests {
    use super::duration_ms;

    #[test]
    fn durations() {
        assert_eq!(duration_ms("500ms"), Ok(500));
        assert_eq!(duration_ms("1.5s"), Ok(1500));
        assert_eq!(duration_ms("1m"), Ok(60_000));
        assert_eq!(duration_ms("2h"), Ok(7_200_000));
        assert!(duration_ms("5").is_err());
        assert!(duration_ms("5 weeks").is_err());
        assert!(duration_ms("0.5ms").is_err());
    }
}
