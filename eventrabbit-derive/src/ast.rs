//! Parsing: the attribute's `key = value` arguments into a typed [`Attr`], and the shape
//! of the decorated function's return type. Only syntax is judged here; what is required
//! or allowed together is [`valid`](crate::valid)'s concern.

use crate::batch::BatchArgs;
use crate::errors::Errors;
use crate::retry::RetrySpec;
use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::parse::{ParseStream, Parser};
use syn::spanned::Spanned;
use syn::{Expr, Ident, Lit, LitStr, PathArguments, ReturnType, Signature, Token, Type};

/// Which attribute is being expanded.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum MacroKind {
    Consumer,
    Function,
    Producer,
}

impl MacroKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            MacroKind::Consumer => "consumer",
            MacroKind::Function => "function",
            MacroKind::Producer => "producer",
        }
    }

    /// The keys the attribute accepts.
    pub(crate) fn keys(self) -> &'static [&'static str] {
        match self {
            MacroKind::Consumer => &["action", "retry", "batch", "crate"],
            MacroKind::Function => &[
                "action",
                "exchange",
                "action_reply",
                "key",
                "retry",
                "crate",
            ],
            MacroKind::Producer => &["exchange", "action", "key", "mandatory", "crate"],
        }
    }
}

/// A string argument given either as a literal or as a path to a `const &str`.
#[derive(Clone)]
pub(crate) struct StrArg {
    pub(crate) expr: Expr,
}

impl StrArg {
    /// The literal's value, when it is a literal.
    pub(crate) fn literal(&self) -> Option<&LitStr> {
        match &self.expr {
            Expr::Lit(lit) => match &lit.lit {
                Lit::Str(s) => Some(s),
                _ => None,
            },
            _ => None,
        }
    }
}

impl ToTokens for StrArg {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        self.expr.to_tokens(tokens);
    }
}

/// The arguments of one attribute, each at most once.
pub(crate) struct Attr {
    pub(crate) kind: MacroKind,
    pub(crate) action: Option<StrArg>,
    pub(crate) exchange: Option<StrArg>,
    pub(crate) action_reply: Option<StrArg>,
    pub(crate) key: Option<StrArg>,
    /// `mandatory = true`: a publish no queue receives is an error.
    pub(crate) mandatory: Option<syn::LitBool>,
    /// `crate = "path"`: where the generated code finds eventrabbit.
    pub(crate) krate: Option<syn::Path>,
    /// `retry(..)`: the handler's own retry policy.
    pub(crate) retry: Option<RetrySpec>,
    /// `batch(..)`: the handler takes a `Vec` of messages.
    pub(crate) batch: Option<BatchArgs>,
    /// The keys given, valid or not (a key given with a bad value is not also missing).
    pub(crate) given: Vec<String>,
    /// Whether the arguments parsed to the end (after a syntax error, none is missing).
    pub(crate) complete: bool,
}

impl Attr {
    /// Parses `key = value, ...`, rejecting keys the attribute does not take, keys given
    /// twice and values of the wrong form; every problem is reported.
    pub(crate) fn parse(kind: MacroKind, tokens: TokenStream, errors: &mut Errors) -> Self {
        let mut attr = Attr {
            kind,
            action: None,
            exchange: None,
            action_reply: None,
            key: None,
            mandatory: None,
            krate: None,
            retry: None,
            batch: None,
            given: Vec::new(),
            complete: true,
        };
        let parser = |input: ParseStream<'_>| {
            while !input.is_empty() {
                let key = parse_key(input)?;
                if key == "retry" && input.peek(syn::token::Paren) {
                    let spec = RetrySpec::parse(input, errors)?;
                    if attr.allowed(&key, errors) {
                        attr.retry = Some(spec);
                    }
                } else if key == "batch" && input.peek(syn::token::Paren) {
                    let args = BatchArgs::parse(input, errors)?;
                    if attr.allowed(&key, errors) {
                        attr.batch = Some(args);
                    }
                } else {
                    input.parse::<Token![=]>()?;
                    let value: Expr = input.parse()?;
                    attr.take(&key, value, errors);
                }
                if input.is_empty() {
                    break;
                }
                input.parse::<Token![,]>()?;
            }
            Ok(())
        };
        if let Err(e) = parser.parse2(tokens) {
            errors.add(e);
            attr.complete = false;
        }
        attr
    }

    /// Whether `key` is taken by this attribute and not given before (else says why).
    fn allowed(&mut self, key: &Ident, errors: &mut Errors) -> bool {
        let name = key.to_string();
        let macro_name = self.kind.name();
        if !self.kind.keys().contains(&name.as_str()) {
            errors.push(
                key.span(),
                format!(
                    "unknown argument `{name}` for `#[{macro_name}]`; valid arguments are: {}",
                    self.kind.keys().join(", ")
                ),
            );
            return false;
        }
        if self.given.contains(&name) {
            errors.push(
                key.span(),
                format!("duplicate argument `{name}` for `#[{macro_name}]`"),
            );
            return false;
        }
        self.given.push(name);
        true
    }

    fn take(&mut self, key: &Ident, value: Expr, errors: &mut Errors) {
        if !self.allowed(key, errors) {
            return;
        }
        let name = key.to_string();
        if name == "batch" {
            errors.push(
                value.span(),
                "`batch` takes a list, e.g. `batch(max = 100, window = \"50ms\")`",
            );
            return;
        }
        if name == "retry" {
            errors.push(
                value.span(),
                "`retry` takes a list, e.g. `retry(max = 3, delay = \"500ms\", multiplier = 2, max_delay = \"1m\", jitter = true)`",
            );
            return;
        }
        if name == "mandatory" {
            match value {
                Expr::Lit(syn::ExprLit {
                    lit: Lit::Bool(b), ..
                }) => self.mandatory = Some(b),
                other => errors.push(other.span(), "`mandatory` takes `true` or `false`"),
            }
            return;
        }
        if name == "crate" {
            match crate_path(&value) {
                Ok(path) => self.krate = Some(path),
                Err(e) => errors.add(e),
            }
            return;
        }
        let arg = match str_arg(value) {
            Ok(arg) => arg,
            Err(e) => return errors.add(e),
        };
        let slot = match name.as_str() {
            "action" => &mut self.action,
            "exchange" => &mut self.exchange,
            "action_reply" => &mut self.action_reply,
            _ => &mut self.key,
        };
        *slot = Some(arg);
    }
}

/// A key: an identifier, or the keyword `crate`.
fn parse_key(input: ParseStream<'_>) -> syn::Result<Ident> {
    if input.peek(Token![crate]) {
        let token: Token![crate] = input.parse()?;
        return Ok(Ident::new("crate", token.span));
    }
    input.parse()
}

fn str_arg(value: Expr) -> syn::Result<StrArg> {
    match &value {
        Expr::Lit(lit) if matches!(lit.lit, Lit::Str(_)) => Ok(StrArg { expr: value }),
        Expr::Path(_) => Ok(StrArg { expr: value }),
        other => Err(syn::Error::new(
            other.span(),
            "expected a string literal or a path to a `const &str`",
        )),
    }
}

/// `crate = "some::path"`: a string literal holding a path.
fn crate_path(value: &Expr) -> syn::Result<syn::Path> {
    let Expr::Lit(lit) = value else {
        return Err(syn::Error::new(
            value.span(),
            "`crate` takes a string literal naming the path to eventrabbit, e.g. `crate = \"my_crate::eventrabbit\"`",
        ));
    };
    let Lit::Str(s) = &lit.lit else {
        return Err(syn::Error::new(
            lit.span(),
            "`crate` takes a string literal naming the path to eventrabbit, e.g. `crate = \"my_crate::eventrabbit\"`",
        ));
    };
    s.parse::<syn::Path>().map_err(|_| {
        syn::Error::new(
            s.span(),
            format!("`{}` is not a path to eventrabbit", s.value()),
        )
    })
}

/// What a function returns, as far as publishing and replying care.
pub(crate) enum Returns {
    /// No return type, or `()`.
    Unit,
    /// A type whose last path segment is `Result`: `Err` is a handler failure.
    Result(Type),
    /// Any other type: published / replied as it is.
    Value(Type),
}

impl Returns {
    pub(crate) fn of(sig: &Signature) -> Self {
        match &sig.output {
            ReturnType::Default => Returns::Unit,
            ReturnType::Type(_, ty) => match &**ty {
                Type::Tuple(t) if t.elems.is_empty() => Returns::Unit,
                Type::Path(p)
                    if p.qself.is_none()
                        && p.path.segments.last().is_some_and(|s| {
                            s.ident == "Result"
                                && matches!(s.arguments, PathArguments::AngleBracketed(_))
                        }) =>
                {
                    Returns::Result((**ty).clone())
                }
                other => Returns::Value(other.clone()),
            },
        }
    }
}

/// Whether `ty` (a `Result`, see [`Returns::Result`]) is `Result<(), ..>`: its `Ok` needs no
/// serializing. Also true of aliases such as `anyhow::Result<()>`; the runtime function
/// the macro then calls takes a `Result<(), E>`, so the compiler checks the guess.
pub(crate) fn ok_is_unit(ty: &Type) -> bool {
    let Type::Path(p) = ty else { return false };
    let Some(PathArguments::AngleBracketed(args)) = p.path.segments.last().map(|s| &s.arguments)
    else {
        return false;
    };
    matches!(
        args.args.first(),
        Some(syn::GenericArgument::Type(Type::Tuple(t))) if t.elems.is_empty()
    )
}

/// `T` of `Result<T, ..>` (or of an alias such as `anyhow::Result<T>`), if written.
pub(crate) fn ok_type(ty: &Type) -> Option<&Type> {
    let Type::Path(p) = ty else { return None };
    let Some(PathArguments::AngleBracketed(args)) = p.path.segments.last().map(|s| &s.arguments)
    else {
        return None;
    };
    match args.args.first() {
        Some(syn::GenericArgument::Type(t)) => Some(t),
        _ => None,
    }
}

/// The span to blame for a missing argument: the attribute as a whole.
pub(crate) fn attribute_span() -> Span {
    Span::call_site()
}
