//! `#[consumer]` and `#[function]`: keep the fn as written and register a
//! handler that decodes `data` into its parameters.

use crate::attr::{Args, non_empty};
use crate::sig::{Errors, Returns, check_common, ok_is_unit, plain_param};
use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::{FnArg, ItemFn, Type, spanned::Spanned};

/// Which attribute is being expanded.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Consumer,
    Function,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Consumer => "consumer",
            Kind::Function => "function",
        }
    }

    fn valid_keys(self) -> &'static [&'static str] {
        match self {
            Kind::Consumer => &["action"],
            Kind::Function => &["action", "exchange", "action_reply", "key"],
        }
    }
}

/// How one parameter of the handler is filled.
enum Source {
    /// From the field of `data` with the parameter's name.
    Field,
    /// The whole of `data`, marked `#[data]`.
    Data,
    /// The delivery context, recognised by its type `MessageContext`.
    Context,
}

struct Param {
    ident: syn::Ident,
    ty: Type,
    source: Source,
}

pub(crate) fn expand(kind: Kind, attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut func: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(e) => return error_with(item, e),
    };
    match expand_fn(kind, attr, &mut func) {
        Ok(tokens) => tokens,
        Err(e) => {
            strip_param_attrs(&mut func);
            error_with(quote!(#func), e)
        }
    }
}

/// Re-emits the item beside the error so IDEs keep resolving it.
pub(crate) fn error_with(item: TokenStream, e: syn::Error) -> TokenStream {
    let err = e.into_compile_error();
    quote!(#item #err)
}

fn expand_fn(kind: Kind, attr: TokenStream, func: &mut ItemFn) -> syn::Result<TokenStream> {
    let name = kind.name();
    let args = Args::parse(name, attr, kind.valid_keys());
    let mut errors = Errors::default();
    check_common(name, &func.sig, &mut errors);
    let params = collect_params(name, func, &mut errors);
    let args = match args {
        Ok(a) => Some(a),
        Err(e) => {
            errors.add(e);
            None
        }
    };
    let span = proc_macro2::Span::call_site();
    let mut action = None;
    let mut reply = None;
    if let Some(args) = &args {
        match args.require(name, "action", span) {
            Ok(a) => {
                if let Err(e) = non_empty(name, "action", a) {
                    errors.add(e);
                }
                action = Some(a.clone());
            }
            Err(e) => errors.add(e),
        }
        if let Kind::Function = kind {
            match args.require(name, "exchange", span) {
                Ok(exchange) => {
                    if let Some(r) = args.get("action_reply")
                        && let Err(e) = non_empty(name, "action_reply", r)
                    {
                        errors.add(e);
                    }
                    reply = Some((
                        exchange.clone(),
                        args.get("action_reply").cloned(),
                        args.get("key").cloned(),
                    ));
                }
                Err(e) => errors.add(e),
            }
        }
    }
    errors.finish()?;
    let action = action.expect("checked above");
    strip_param_attrs(func);

    let fn_name = &func.sig.ident;
    let fields: Vec<_> = params
        .iter()
        .filter(|p| matches!(p.source, Source::Field))
        .collect();
    let args_struct = format_ident!("__EventrabbitArgs");
    let field_defs = fields.iter().map(|p| {
        let (ident, ty) = (&p.ident, &p.ty);
        quote_spanned!(ty.span()=> #ident: #ty,)
    });
    let field_names: Vec<_> = fields.iter().map(|p| &p.ident).collect();
    let decode_fields = if fields.is_empty() {
        quote!()
    } else {
        quote! {
            let #args_struct { #(#field_names),* } = __input.args::<#args_struct>()?;
        }
    };
    let decode_others = params.iter().filter_map(|p| {
        let (ident, ty) = (&p.ident, &p.ty);
        match p.source {
            Source::Field => None,
            Source::Data => Some(quote_spanned! {ty.span()=>
                let #ident: #ty = __input.data::<#ty>()?;
            }),
            Source::Context => Some(quote! { let #ident = __input.context(); }),
        }
    });
    let call_args = params.iter().map(|p| &p.ident);
    // Bound checks spanned on the return type, so a wrong type is reported where it is written.
    // `()` results take an outcome function that serializes nothing.
    let (outcome, return_check) = match Returns::of(&func.sig) {
        Returns::Result(ty) => (
            if ok_is_unit(&ty) {
                quote!(::eventrabbit::__private::unit_result_outcome)
            } else {
                quote!(::eventrabbit::__private::result_outcome)
            },
            quote_spanned!(ty.span()=> ::eventrabbit::__private::assert_result_return::<#ty>();),
        ),
        Returns::Value(ty) => (
            quote!(::eventrabbit::__private::value_outcome),
            quote_spanned!(ty.span()=> ::eventrabbit::__private::assert_value_return::<#ty>();),
        ),
        Returns::Unit => (quote!(::eventrabbit::__private::unit_outcome), quote!()),
    };
    let registration = match reply {
        None => quote! {
            ::eventrabbit::__private::Registration::consumer(
                #action,
                ::core::concat!(::core::module_path!(), "::", ::core::stringify!(#fn_name)),
                __eventrabbit_call,
            )
        },
        Some((exchange, action_reply, key)) => {
            let action_reply = action_reply
                .map(|a| quote!(#a))
                .unwrap_or_else(|| quote!(#action));
            let key = key.map(|k| quote!(#k)).unwrap_or_else(|| quote!(""));
            quote! {
                ::eventrabbit::__private::Registration::function(
                    #action,
                    ::core::concat!(::core::module_path!(), "::", ::core::stringify!(#fn_name)),
                    ::eventrabbit::__private::ReplyTarget::new(#exchange, #action_reply, #key),
                    __eventrabbit_call,
                )
            }
        }
    };

    Ok(quote! {
        #func

        #[doc(hidden)]
        const _: () = {
            #[derive(::eventrabbit::__private::serde::Deserialize)]
            #[serde(crate = "::eventrabbit::__private::serde")]
            #[allow(non_camel_case_types, dead_code)]
            struct #args_struct { #(#field_defs)* }

            #[allow(dead_code)]
            fn __eventrabbit_check() { #return_check }

            fn __eventrabbit_call(
                __input: ::eventrabbit::__private::Input,
            ) -> ::eventrabbit::__private::HandlerFuture {
                ::std::boxed::Box::pin(async move {
                    #decode_fields
                    #(#decode_others)*
                    #outcome(#fn_name(#(#call_args),*).await)
                })
            }

            ::eventrabbit::__private::inventory::submit! { #registration }
        };
    })
}

fn collect_params(name: &str, func: &ItemFn, errors: &mut Errors) -> Vec<Param> {
    let mut params = Vec::new();
    let mut data_seen = false;
    let mut context_seen = false;
    for arg in &func.sig.inputs {
        let (pt, ident) = match plain_param(arg, name) {
            Ok(p) => p,
            Err(e) => {
                errors.add(e);
                continue;
            }
        };
        let is_data = pt.attrs.iter().any(|a| a.path().is_ident("data"));
        let is_context = is_context_type(&pt.ty);
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
        let source = if is_data {
            if data_seen {
                errors.push(pt.span(), "only one parameter may be marked `#[data]`");
            }
            data_seen = true;
            Source::Data
        } else if is_context {
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

fn is_context_type(ty: &Type) -> bool {
    matches!(ty, Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "MessageContext"))
}

fn strip_param_attrs(func: &mut ItemFn) {
    for arg in &mut func.sig.inputs {
        if let FnArg::Typed(pt) = arg {
            pt.attrs.retain(|a| !a.path().is_ident("data"));
        }
    }
}
