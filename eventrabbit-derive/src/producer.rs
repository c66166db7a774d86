//! `#[producer]`: run the body, publish its result, return it.

use crate::attr::{Args, non_empty};
use crate::handler::error_with;
use crate::sig::{Errors, Returns, check_common};
use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::{FnArg, ImplItemFn, Pat, ReturnType, spanned::Spanned};

const NAME: &str = "producer";
const KEYS: &[&str] = &["exchange", "action", "key"];

pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    // `ImplItemFn` parses free fns and methods alike (a free fn is a method without `self`).
    let mut func: ImplItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(e) => return error_with(item, e),
    };
    match expand_fn(attr, &mut func) {
        Ok(tokens) => tokens,
        Err(e) => error_with(item, e),
    }
}

fn expand_fn(attr: TokenStream, func: &mut ImplItemFn) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    check_common(NAME, &func.sig, &mut errors);
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
    let args = match Args::parse(NAME, attr, KEYS) {
        Ok(a) => Some(a),
        Err(e) => {
            errors.add(e);
            None
        }
    };
    let mut target = None;
    if let Some(args) = &args {
        let span = Span::call_site();
        let exchange = args.require(NAME, "exchange", span);
        let action = args.require(NAME, "action", span);
        if let Ok(a) = &action
            && let Err(e) = non_empty(NAME, "action", a)
        {
            errors.add(e);
        }
        match (exchange, action) {
            (Ok(x), Ok(a)) => target = Some((x.clone(), a.clone(), args.get("key").cloned())),
            (x, a) => {
                for e in [x.err(), a.err()].into_iter().flatten() {
                    errors.add(e);
                }
            }
        }
    }
    errors.finish()?;
    let (exchange, action, key) = target.expect("checked above");
    let key = key.map(|k| quote!(#k)).unwrap_or_else(|| quote!(""));

    let body = &func.block;
    let stmts = &body.stmts;
    let publish = quote! {
        ::eventrabbit::__private::publish_produced(#exchange, #key, #action, &__eventrabbit_value).await
    };
    let (ret_ty, new_body) = match returns {
        Returns::Result(ty) => {
            let ret = quote_spanned! {ty.span()=>
                let __eventrabbit_value = __eventrabbit_result?;
                #publish.map_err(::core::convert::From::from)?;
                ::core::result::Result::Ok(__eventrabbit_value)
            };
            (ty.clone(), ret)
        }
        Returns::Value(ty) => {
            let ret = quote! {
                let __eventrabbit_value = __eventrabbit_result;
                #publish?;
                ::core::result::Result::Ok(__eventrabbit_value)
            };
            let wrapped: syn::Type =
                syn::parse_quote_spanned!(ty.span()=> ::eventrabbit::Result<#ty>);
            (wrapped, ret)
        }
        Returns::Unit => unreachable!("rejected above"),
    };
    let body_ty = match &func.sig.output {
        ReturnType::Type(_, ty) => (**ty).clone(),
        ReturnType::Default => unreachable!("rejected above"),
    };
    func.sig.output = syn::parse_quote!(-> #ret_ty);
    func.block = syn::parse_quote! {{
        let __eventrabbit_result: #body_ty = async move {
            #[allow(unreachable_code, clippy::diverging_sub_expression)]
            if false {
                let __eventrabbit_fake: #body_ty = loop {};
                return __eventrabbit_fake;
            }
            #(#stmts)*
        }
        .await;
        #new_body
    }};
    Ok(quote!(#func))
}
