//! Parsing of the macro arguments: `key = value` pairs into typed fields.

use proc_macro2::Span;
use quote::ToTokens;
use syn::{
    Expr, Ident, Lit, Token,
    parse::{Parse, ParseStream},
    punctuated::Punctuated,
    spanned::Spanned,
};

/// A string argument given either as a literal or as a path to a `const &str`.
#[derive(Clone)]
pub(crate) struct StrArg {
    pub(crate) expr: Expr,
}

impl ToTokens for StrArg {
    fn to_tokens(&self, tokens: &mut proc_macro2::TokenStream) {
        self.expr.to_tokens(tokens);
    }
}

struct Pair {
    key: Ident,
    value: Expr,
}

impl Parse for Pair {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let key: Ident = input.parse()?;
        input.parse::<Token![=]>()?;
        let value: Expr = input.parse()?;
        Ok(Pair { key, value })
    }
}

/// The arguments of one attribute, checked against the keys that attribute accepts.
pub(crate) struct Args {
    pairs: Vec<(Ident, StrArg)>,
}

impl Args {
    /// Parses `tokens` as `key = "value", ...`, rejecting keys outside `valid`
    /// and keys given twice; all problems are reported together.
    pub(crate) fn parse(
        macro_name: &str,
        tokens: proc_macro2::TokenStream,
        valid: &[&str],
    ) -> syn::Result<Self> {
        let parser = Punctuated::<Pair, Token![,]>::parse_terminated;
        let pairs = syn::parse::Parser::parse2(parser, tokens)?;
        let mut errors: Option<syn::Error> = None;
        let mut push = |e: syn::Error| match errors.as_mut() {
            Some(all) => all.combine(e),
            None => errors = Some(e),
        };
        let mut out: Vec<(Ident, StrArg)> = Vec::new();
        for Pair { key, value } in pairs {
            let name = key.to_string();
            if !valid.contains(&name.as_str()) {
                push(syn::Error::new(
                    key.span(),
                    format!(
                        "unknown argument `{name}` for `#[{macro_name}]`; valid arguments are: {}",
                        valid.join(", ")
                    ),
                ));
                continue;
            }
            if out.iter().any(|(k, _)| *k == key) {
                push(syn::Error::new(
                    key.span(),
                    format!("duplicate argument `{name}` for `#[{macro_name}]`"),
                ));
                continue;
            }
            match check_value(&value) {
                Ok(()) => out.push((key, StrArg { expr: value })),
                Err(e) => push(e),
            }
        }
        match errors {
            Some(e) => Err(e),
            None => Ok(Args { pairs: out }),
        }
    }

    /// The value of `key`, if given.
    pub(crate) fn get(&self, key: &str) -> Option<&StrArg> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The value of `key`, or a spanned error saying it is required.
    pub(crate) fn require(&self, macro_name: &str, key: &str, span: Span) -> syn::Result<&StrArg> {
        self.get(key).ok_or_else(|| {
            syn::Error::new(span, format!("`#[{macro_name}]` needs `{key} = \"...\"`"))
        })
    }
}

fn check_value(value: &Expr) -> syn::Result<()> {
    match value {
        Expr::Lit(lit) => match &lit.lit {
            Lit::Str(_) => Ok(()),
            other => Err(syn::Error::new(
                other.span(),
                "expected a string literal or a path to a `const &str`",
            )),
        },
        Expr::Path(_) => Ok(()),
        other => Err(syn::Error::new(
            other.span(),
            "expected a string literal or a path to a `const &str`",
        )),
    }
}

/// Rejects an empty string literal for keys such as `action`, which name something.
pub(crate) fn non_empty(macro_name: &str, key: &str, arg: &StrArg) -> syn::Result<()> {
    if let Expr::Lit(lit) = &arg.expr
        && let Lit::Str(s) = &lit.lit
        && s.value().is_empty()
    {
        return Err(syn::Error::new(
            s.span(),
            format!("`{key}` of `#[{macro_name}]` must not be empty"),
        ));
    }
    Ok(())
}
