//! Checks on the decorated function's signature shared by all three macros.

use proc_macro2::Span;
use syn::{FnArg, Pat, PathArguments, ReturnType, Signature, Type, spanned::Spanned};

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

/// Errors common to every decorated fn: it must be a plain, non-generic `async fn`.
pub(crate) fn check_common(macro_name: &str, sig: &Signature, errors: &mut Errors) {
    if sig.asyncness.is_none() {
        errors.push(
            sig.fn_token.span(),
            format!("`#[{macro_name}]` must be put on an `async fn`"),
        );
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.push(
            sig.generics.span(),
            format!("`#[{macro_name}]` does not support generic functions"),
        );
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(variadic.span(), "variadic functions are not supported");
    }
}

/// A plain `name: Type` parameter, or an error saying why it is not one.
pub(crate) fn plain_param<'a>(
    arg: &'a FnArg,
    macro_name: &str,
) -> Result<(&'a syn::PatType, &'a syn::Ident), syn::Error> {
    match arg {
        FnArg::Receiver(r) => Err(syn::Error::new(
            r.span(),
            format!(
                "`#[{macro_name}]` cannot take `self`: handlers are free functions registered by action"
            ),
        )),
        FnArg::Typed(pt) => match &*pt.pat {
            Pat::Ident(pi) if pi.by_ref.is_none() && pi.subpat.is_none() => Ok((pt, &pi.ident)),
            other => Err(syn::Error::new(
                other.span(),
                "unsupported parameter pattern: use a plain identifier (it names the field read from `data`)",
            )),
        },
    }
}

/// Collects several spanned errors into one report.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, span: Span, msg: impl std::fmt::Display) {
        self.add(syn::Error::new(span, msg));
    }

    pub(crate) fn add(&mut self, e: syn::Error) {
        match self.0.as_mut() {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    pub(crate) fn finish(self) -> syn::Result<()> {
        match self.0 {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
