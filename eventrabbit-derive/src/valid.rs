//! Validation: the parsed attribute and function checked against what each macro needs,
//! into a [`Handler`] or [`Producer`] that expansion can trust. Every problem is a spanned
//! error, and all of them are reported at once.

use crate::ast::{Attr, MacroKind, Returns, StrArg, attribute_span, ok_is_unit};
use crate::batch::BatchArgs;
use crate::errors::Errors;
use crate::retry::RetrySpec;
use syn::spanned::Spanned;
use syn::{FnArg, ImplItemFn, ItemFn, Pat, Signature, Type};

/// How one parameter of a handler is filled.
pub(crate) enum Source {
    /// From the field of `data` with the parameter's name.
    Field,
    /// The whole of `data`, marked `#[data]`.
    Data,
    /// The delivery context: a type named `MessageContext`, or marked `#[context]`.
    Context,
    /// Registered application state: a type spelled `State<T>`, or marked `#[state]`.
    State,
}

/// One parameter of a handler.
pub(crate) struct Param {
    pub(crate) ident: syn::Ident,
    pub(crate) ty: Type,
    pub(crate) source: Source,
}

/// Where a `#[function]` publishes its result.
pub(crate) struct ReplyTo {
    pub(crate) exchange: StrArg,
    pub(crate) action: StrArg,
    pub(crate) key: Option<StrArg>,
}

/// A valid `#[consumer]` or `#[function]`.
pub(crate) struct Handler {
    pub(crate) krate: syn::Path,
    pub(crate) action: StrArg,
    pub(crate) retry: Option<RetrySpec>,
    pub(crate) batch: Option<Batch>,
    pub(crate) reply: Option<ReplyTo>,
    pub(crate) params: Vec<Param>,
    pub(crate) returns: Returns,
}

/// A valid batch handler: its limits and the type of each message's data.
pub(crate) struct Batch {
    pub(crate) max: usize,
    pub(crate) window_ms: u64,
    pub(crate) item: Type,
}

/// A valid `#[producer]`.
pub(crate) struct Producer {
    pub(crate) krate: syn::Path,
    pub(crate) exchange: StrArg,
    pub(crate) action: StrArg,
    pub(crate) key: Option<StrArg>,
    pub(crate) mandatory: bool,
    pub(crate) returns: Returns,
}

/// The parameter attributes the handler macros read (and remove from the function).
pub(crate) const PARAM_ATTRS: [&str; 3] = ["data", "context", "state"];

pub(crate) fn handler(attr: Attr, func: &ItemFn, errors: &mut Errors) -> Option<Handler> {
    let name = attr.kind.name();
    check_common(name, &func.sig, errors);
    let params = params(name, &func.sig, errors);
    let action = required(&attr, "action", attr.action.as_ref(), errors);
    if let Some(action) = &action {
        non_empty(name, "action", action, errors);
        pattern(name, action, errors);
    }
    let reply = match attr.kind {
        MacroKind::Function => {
            let exchange = required(&attr, "exchange", attr.exchange.as_ref(), errors);
            if let Some(r) = &attr.action_reply {
                non_empty(name, "action_reply", r, errors);
            }
            if let (None, Some(s)) = (
                &attr.action_reply,
                action.as_ref().and_then(StrArg::literal),
            ) && s.value().contains('*')
            {
                errors.push(
                    s.span(),
                    "a `#[function]` serving an action pattern needs `action_reply = \"...\"`: its result cannot be published under a pattern",
                );
            }
            match (exchange, &action) {
                (Some(exchange), Some(action)) => Some(ReplyTo {
                    exchange,
                    action: attr.action_reply.clone().unwrap_or_else(|| action.clone()),
                    key: attr.key.clone(),
                }),
                _ => None,
            }
        }
        _ => None,
    };
    let returns = Returns::of(&func.sig);
    let batch = attr
        .batch
        .as_ref()
        .and_then(|args| batch(args, &params, &returns, &func.sig, errors));
    Some(Handler {
        krate: krate(&attr),
        action: action?,
        retry: attr.retry,
        batch,
        reply,
        params,
        returns,
    })
}

/// A batch handler takes one parameter, a `Vec<T>` of the messages' data, and returns one
/// outcome for all of them.
fn batch(
    args: &BatchArgs,
    params: &[Param],
    returns: &Returns,
    sig: &Signature,
    errors: &mut Errors,
) -> Option<Batch> {
    // Besides state: the messages' data, and optionally their contexts.
    let (contexts, messages): (Vec<&Param>, Vec<&Param>) = params
        .iter()
        .filter(|p| !matches!(p.source, Source::State))
        .partition(|p| is_contexts(&p.ty));
    let item = match (messages.as_slice(), contexts.len()) {
        ([p], 0 | 1) if !matches!(p.source, Source::Context) => vec_item(&p.ty),
        _ => None,
    };
    if item.is_none() {
        // At the second list of contexts if there is one, else at the data.
        let span = contexts
            .get(1)
            .or(messages.first())
            .map_or(sig.ident.span(), |p| p.ty.span());
        errors.push(
            span,
            "a batch handler takes one parameter, a `Vec<T>` of the messages' data (`T: Deserialize`), and may take a `Vec<MessageContext>` (each message's context, in the same order), besides `State<..>` parameters, e.g. `async fn f(items: Vec<Metric>, ctxs: Vec<MessageContext>, db: State<Db>)`",
        );
    }
    let unit = match returns {
        Returns::Unit => true,
        Returns::Result(ty) => ok_is_unit(ty),
        Returns::Value(_) => false,
    };
    if !unit {
        let span = match &sig.output {
            syn::ReturnType::Type(_, ty) => ty.span(),
            syn::ReturnType::Default => args.span,
        };
        errors.push(
            span,
            "a batch handler returns `()` or `Result<(), E>`: one outcome settles every message of the batch",
        );
    }
    Some(Batch {
        max: args.max,
        window_ms: args.window_ms,
        item: item?,
    })
}

/// Whether `ty` is spelled `Vec<MessageContext>`: a batch's contexts.
pub(crate) fn is_contexts(ty: &Type) -> bool {
    matches!(
        vec_item(ty),
        Some(Type::Path(p)) if p.path.segments.last().is_some_and(|s| s.ident == "MessageContext")
    )
}

/// `T` of a type spelled `Vec<T>` (any path ending so).
fn vec_item(ty: &Type) -> Option<Type> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != "Vec" {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.first() {
        Some(syn::GenericArgument::Type(t)) if args.args.len() == 1 => Some(t.clone()),
        _ => None,
    }
}

pub(crate) fn producer(attr: Attr, func: &ImplItemFn, errors: &mut Errors) -> Option<Producer> {
    let name = attr.kind.name();
    check_common(name, &func.sig, errors);
    for arg in &func.sig.inputs {
        if let FnArg::Typed(pt) = arg
            && !matches!(&*pt.pat, Pat::Ident(_))
        {
            errors.push(
                pt.pat.span(),
                "unsupported parameter pattern: use a plain identifier",
            );
        }
    }
    let returns = Returns::of(&func.sig);
    if let Returns::Unit = returns {
        errors.push(
            func.sig.ident.span(),
            "`#[producer]` publishes what the function returns: give it a return type that serializes to a JSON object",
        );
    }
    let exchange = required(&attr, "exchange", attr.exchange.as_ref(), errors);
    let action = required(&attr, "action", attr.action.as_ref(), errors);
    if let Some(action) = &action {
        non_empty(name, "action", action, errors);
    }
    Some(Producer {
        krate: krate(&attr),
        exchange: exchange?,
        action: action?,
        key: attr.key.clone(),
        mandatory: attr.mandatory.as_ref().is_some_and(|b| b.value),
        returns,
    })
}

/// The path generated code reaches eventrabbit by.
fn krate(attr: &Attr) -> syn::Path {
    attr.krate
        .clone()
        .unwrap_or_else(|| syn::parse_quote!(::eventrabbit))
}

fn required(attr: &Attr, key: &str, value: Option<&StrArg>, errors: &mut Errors) -> Option<StrArg> {
    if value.is_none() && attr.complete && !attr.given.iter().any(|k| k == key) {
        errors.push(
            attribute_span(),
            format!("`#[{}]` needs `{key} = \"...\"`", attr.kind.name()),
        );
    }
    value.cloned()
}

/// Rejects an empty string literal for keys such as `action`, which name something.
fn non_empty(macro_name: &str, key: &str, arg: &StrArg, errors: &mut Errors) {
    if let Some(s) = arg.literal()
        && s.value().is_empty()
    {
        errors.push(
            s.span(),
            format!("`{key}` of `#[{macro_name}]` must not be empty"),
        );
    }
}

/// An action pattern's `*` stands for any run of characters; two in a row say nothing
/// more and are refused, as is a pattern that is only `*` (it would take every action:
/// leave `action` out of `ConsumeChannel::actions` instead).
fn pattern(macro_name: &str, arg: &StrArg, errors: &mut Errors) {
    let Some(s) = arg.literal() else { return };
    let value = s.value();
    if value.contains("**") {
        errors.push(
            s.span(),
            format!(
                "`action` of `#[{macro_name}]`: `**` in a pattern means the same as `*`; write one"
            ),
        );
    } else if value == "*" {
        errors.push(
            s.span(),
            format!("`action` of `#[{macro_name}]`: a pattern must name more than `*`, e.g. `\"USER_*\"`"),
        );
    }
}

/// Errors common to every decorated fn: it must be a plain, non-generic `async fn`.
fn check_common(macro_name: &str, sig: &Signature, errors: &mut Errors) {
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

/// A handler's parameters, each with where its value comes from.
fn params(macro_name: &str, sig: &Signature, errors: &mut Errors) -> Vec<Param> {
    let mut params = Vec::new();
    let mut data_seen = false;
    let mut context_seen = false;
    for arg in &sig.inputs {
        let pt = match arg {
            FnArg::Receiver(r) => {
                errors.push(
                    r.span(),
                    format!(
                        "`#[{macro_name}]` cannot take `self`: handlers are free functions registered by action"
                    ),
                );
                continue;
            }
            FnArg::Typed(pt) => pt,
        };
        let ident = match &*pt.pat {
            Pat::Ident(pi) if pi.by_ref.is_none() && pi.subpat.is_none() => &pi.ident,
            other => {
                errors.push(
                    other.span(),
                    "unsupported parameter pattern: use a plain identifier (it names the field read from `data`)",
                );
                continue;
            }
        };
        if let Type::Reference(r) = &*pt.ty {
            errors.push(
                r.span(),
                "handler parameters must be owned types: they are decoded from each message",
            );
            continue;
        }
        if matches!(&*pt.ty, Type::ImplTrait(_)) {
            errors.push(pt.ty.span(), "`impl Trait` parameters are not supported");
            continue;
        }
        let marked = |name: &str| pt.attrs.iter().find(|a| a.path().is_ident(name));
        let markers: Vec<_> = ["data", "context", "state"]
            .into_iter()
            .filter_map(marked)
            .collect();
        if let [_, second, ..] = markers.as_slice() {
            errors.push(
                second.span(),
                "a parameter takes one of `#[data]`, `#[context]` or `#[state]`, not several",
            );
            continue;
        }
        if let Some(with_args) = markers
            .iter()
            .find(|a| !matches!(a.meta, syn::Meta::Path(_)))
        {
            let name = with_args.path().get_ident().map(ToString::to_string);
            errors.push(
                with_args.meta.span(),
                format!(
                    "`#[{}]` takes no arguments: the parameter's type says what it takes",
                    name.unwrap_or_default()
                ),
            );
            continue;
        }
        let source = if marked("data").is_some() {
            if data_seen {
                errors.push(pt.span(), "only one parameter may be marked `#[data]`");
            }
            data_seen = true;
            Source::Data
        } else if marked("state").is_some() || names_state(&pt.ty) {
            Source::State
        } else if marked("context").is_some() || names_message_context(&pt.ty) {
            if context_seen {
                errors.push(
                    pt.span(),
                    "only one parameter may take the `MessageContext`",
                );
            }
            context_seen = true;
            Source::Context
        } else {
            Source::Field
        };
        params.push(Param {
            ident: ident.clone(),
            ty: (*pt.ty).clone(),
            source,
        });
    }
    params
}

/// Whether `ty` is spelled as a path ending in `MessageContext` (`MessageContext`,
/// `eventrabbit::MessageContext`, ...). An alias or a re-export under another name is
/// recognised by marking the parameter `#[context]`.
fn names_message_context(ty: &Type) -> bool {
    matches!(ty, Type::Path(p) if p.qself.is_none()
        && p.path.segments.last().is_some_and(|s| s.ident == "MessageContext" && s.arguments.is_none()))
}

/// Whether `ty` is spelled as a path ending in `State<..>` (`State<Db>`,
/// `eventrabbit::State<Db>`). An alias is recognised by marking the parameter `#[state]`.
fn names_state(ty: &Type) -> bool {
    matches!(ty, Type::Path(p) if p.qself.is_none()
        && p.path.segments.last().is_some_and(|s| s.ident == "State"
            && matches!(s.arguments, syn::PathArguments::AngleBracketed(_))))
}
