//! Expansion: the code generated for a valid [`Handler`] or [`Producer`]. Generated code
//! calls ordinary runtime functions through `<crate>::__private` and names its own items
//! `__eventrabbit_*`, so it never collides with the user's names.

use crate::ast::{Returns, StrArg, ok_is_unit};
use crate::valid::{Batch, Handler, PARAM_ATTRS, Producer, Source};
use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ImplItemFn, ItemFn, ReturnType};

/// Removes the parameter attributes the handler macros read.
pub(crate) fn strip_param_attrs(func: &mut ItemFn) {
    for arg in &mut func.sig.inputs {
        if let FnArg::Typed(pt) = arg {
            pt.attrs
                .retain(|a| !PARAM_ATTRS.iter().any(|name| a.path().is_ident(name)));
        }
    }
}

/// The function as written, and beside it a registered handler that decodes `data` into
/// its parameters and turns its result into a reply.
pub(crate) fn handler(func: &ItemFn, spec: &Handler) -> TokenStream {
    if let Some(batch) = &spec.batch {
        return batch_handler(func, spec, batch);
    }
    let krate = &spec.krate;
    let private = quote!(#krate::__private);
    let fn_name = &func.sig.ident;
    // Each parameter's value is held in a local of its own name, which no parameter or
    // function of the user's can shadow (`async fn email(email: String)` works).
    let locals: Vec<_> = (0..spec.params.len())
        .map(|i| format_ident!("__eventrabbit_arg{}", i))
        .collect();
    let fields: Vec<_> = spec
        .params
        .iter()
        .zip(&locals)
        .filter(|(p, _)| matches!(p.source, Source::Field))
        .collect();
    let field_defs = fields.iter().map(|(p, _)| {
        let (ident, ty) = (&p.ident, &p.ty);
        quote_spanned!(ty.span()=> #ident: #ty,)
    });
    let field_binds = fields.iter().map(|(p, local)| {
        let ident = &p.ident;
        quote!(#ident: #local)
    });
    let decode_fields = if fields.is_empty() {
        quote!()
    } else {
        quote! {
            let __EventrabbitArgs { #(#field_binds),* } = __input.args::<__EventrabbitArgs>()?;
        }
    };
    let decode_others = spec.params.iter().zip(&locals).filter_map(|(p, local)| {
        let ty = &p.ty;
        match p.source {
            Source::Field => None,
            Source::Data => Some(quote_spanned! {ty.span()=>
                let #local: #ty = __input.data::<#ty>()?;
            }),
            Source::Context => Some(quote_spanned! {ty.span()=>
                let #local: #ty = __input.context();
            }),
            Source::State => Some(quote_spanned! {ty.span()=>
                let #local: #ty = <#ty as #private::StateParam>::take(&__input)?;
            }),
        }
    });
    // Bound checks spanned on the return type, so a wrong type is reported where it is
    // written. `()` results take an outcome function that serializes nothing.
    // A `Result`'s error is classified where its type is known (see `Classify`).
    let classify = quote! {
        .map_err(|__eventrabbit_error| {
            #[allow(unused_imports)]
            use #private::{ViaDisplay as _, ViaHandlerError as _, ViaStdError as _};
            (&&&#private::Classify(&__eventrabbit_error)).failure()
        })
    };
    let (outcome, return_check) = match &spec.returns {
        Returns::Result(ty) => (
            if ok_is_unit(ty) {
                quote!(#private::unit_result_outcome)
            } else {
                quote!(#private::result_outcome)
            },
            quote_spanned!(ty.span()=> #private::assert_result_return::<#ty>();),
        ),
        Returns::Value(ty) => (
            quote!(#private::value_outcome),
            quote_spanned!(ty.span()=> #private::assert_value_return::<#ty>();),
        ),
        Returns::Unit => (quote!(#private::unit_outcome), quote!()),
    };
    let classify = match &spec.returns {
        Returns::Result(_) => classify,
        _ => quote!(),
    };
    let action = &spec.action;
    let name = path_of(fn_name);
    let publishing = spec.reply.as_ref().map(|reply| {
        let (exchange, reply_action) = (&reply.exchange, &reply.action);
        let key = key_or_empty(reply.key.as_ref());
        quote!(.publishing(#private::ReplyTarget::new(#exchange, #reply_action, #key)))
    });
    let retry = retrying(spec, &private);
    let (states_fn, needing) = states(spec, &private);
    let (schema_fns, describing) = crate::schema::handler(spec, None);
    let registration = quote! {
        #private::Registration::new(#action, #name, __eventrabbit_call, __eventrabbit_validate)
            #publishing
            #retry
            #needing
            #describing
    };
    // The same decoding as the call, without running the handler (for redrive dry runs).
    let validate_fields = if fields.is_empty() {
        quote!()
    } else {
        quote!(let _ = __input.args::<__EventrabbitArgs>()?;)
    };
    let validate_data = spec
        .params
        .iter()
        .filter(|p| matches!(p.source, Source::Data))
        .map(|p| {
            let ty = &p.ty;
            quote_spanned!(ty.span()=> let _ = __input.data::<#ty>()?;)
        });
    let serde_crate = format!("{}::__private::serde", path_string(krate));
    quote! {
        #func

        #[doc(hidden)]
        const _: () = {
            #[derive(#private::serde::Deserialize)]
            #[serde(crate = #serde_crate)]
            #[allow(non_camel_case_types, dead_code)]
            struct __EventrabbitArgs { #(#field_defs)* }

            #[allow(dead_code)]
            fn __eventrabbit_check() { #return_check }

            fn __eventrabbit_validate(
                __input: &#private::Input,
            ) -> ::core::result::Result<(), #private::Failure> {
                #validate_fields
                #(#validate_data)*
                ::core::result::Result::Ok(())
            }

            fn __eventrabbit_call(__input: #private::Input) -> #private::HandlerFuture {
                ::std::boxed::Box::pin(async move {
                    #decode_fields
                    #(#decode_others)*
                    #outcome(#fn_name(#(#locals),*).await #classify)
                })
            }

            #schema_fns
            #states_fn

            #private::inventory::submit! { #registration }
        };
    }
}

/// A batch handler: the messages of one batch decoded each into the `Vec`'s item type and
/// handed over together; one message alone (a redrive check, a log replay) is a batch of
/// one.
fn batch_handler(func: &ItemFn, spec: &Handler, batch: &Batch) -> TokenStream {
    let krate = &spec.krate;
    let private = quote!(#krate::__private);
    let fn_name = &func.sig.ident;
    let item = &batch.item;
    let (max, window_ms) = (batch.max, batch.window_ms);
    let (outcome, classify) = match &spec.returns {
        Returns::Result(_) => (
            quote!(#private::unit_result_outcome),
            quote! {
                .map_err(|__eventrabbit_error| {
                    #[allow(unused_imports)]
                    use #private::{ViaDisplay as _, ViaHandlerError as _, ViaStdError as _};
                    (&&&#private::Classify(&__eventrabbit_error)).failure()
                })
            },
        ),
        _ => (quote!(#private::unit_outcome), quote!()),
    };
    let return_check = match &spec.returns {
        Returns::Result(ty) => {
            quote_spanned!(ty.span()=> #private::assert_result_return::<#ty>();)
        }
        _ => quote!(),
    };
    let action = &spec.action;
    let name = path_of(fn_name);
    let retry = retrying(spec, &private);
    let (states_fn, needing) = states(spec, &private);
    let (schema_fns, describing) = crate::schema::handler(spec, Some(item));
    // The batch's items go to the one parameter that is not state; state comes from the
    // queue the batch's messages were read from (the first message's).
    let args = spec.params.iter().map(|p| match p.source {
        Source::State => {
            let ty = &p.ty;
            quote_spanned!(ty.span()=> <#ty as #private::StateParam>::take(#private::first_input(&__inputs)?)?)
        }
        _ if crate::valid::is_contexts(&p.ty) => {
            quote!(__inputs.iter().map(#private::Input::context).collect())
        }
        _ => quote!(__eventrabbit_items),
    });
    quote! {
        #func

        #[doc(hidden)]
        const _: () = {
            #[allow(dead_code)]
            fn __eventrabbit_check() { #return_check }

            fn __eventrabbit_validate(
                __input: &#private::Input,
            ) -> ::core::result::Result<(), #private::Failure> {
                let _ = __input.data::<#item>()?;
                ::core::result::Result::Ok(())
            }

            fn __eventrabbit_batch(
                __inputs: ::std::vec::Vec<#private::Input>,
            ) -> #private::HandlerFuture {
                ::std::boxed::Box::pin(async move {
                    let mut __eventrabbit_items: ::std::vec::Vec<#item> =
                        ::std::vec::Vec::with_capacity(__inputs.len());
                    for __input in &__inputs {
                        __eventrabbit_items.push(__input.data::<#item>()?);
                    }
                    #outcome(#fn_name(#(#args),*).await #classify)
                })
            }

            fn __eventrabbit_call(__input: #private::Input) -> #private::HandlerFuture {
                __eventrabbit_batch(::std::vec![__input])
            }

            #schema_fns
            #states_fn

            #private::inventory::submit! {
                #private::Registration::new(#action, #name, __eventrabbit_call, __eventrabbit_validate)
                    .batching(#private::BatchSpec::new(#max, #window_ms), __eventrabbit_batch)
                    #retry
                    #needing
                    #describing
            }
        };
    }
}

/// The function rewritten to run its body, publish the result and return it.
pub(crate) fn producer(mut func: ImplItemFn, spec: &Producer) -> TokenStream {
    let krate = &spec.krate;
    let (exchange, action) = (&spec.exchange, &spec.action);
    let key = key_or_empty(spec.key.as_ref());
    let mandatory = spec.mandatory;
    let publish = quote! {
        #krate::__private::publish_produced(
            #exchange, #key, #action, &__eventrabbit_value, #mandatory,
        )
        .await
    };
    let (ret_ty, new_body) = match &spec.returns {
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
            let wrapped: syn::Type = syn::parse_quote_spanned!(ty.span()=> #krate::Result<#ty>);
            (wrapped, ret)
        }
        Returns::Unit => unreachable!("validation rejects producers returning ()"),
    };
    let body_ty = match &func.sig.output {
        ReturnType::Type(_, ty) => (**ty).clone(),
        ReturnType::Default => unreachable!("validation rejects producers returning ()"),
    };
    let registration = crate::schema::producer(&func, spec);
    let stmts = &func.block.stmts;
    let block = syn::parse_quote! {{
        #registration
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
    func.block = block;
    func.sig.output = syn::parse_quote!(-> #ret_ty);
    quote!(#func)
}

/// The registered name of the function `fn_name`: its path, as `module::fn`.
pub(crate) fn path_of(fn_name: &syn::Ident) -> TokenStream {
    quote!(::core::concat!(
        ::core::module_path!(),
        "::",
        ::core::stringify!(#fn_name)
    ))
}

/// `.retrying(..)` on a registration, when the handler has its own retry policy.
fn retrying(spec: &Handler, private: &TokenStream) -> Option<TokenStream> {
    spec.retry.as_ref().map(|r| {
        let r = r.expand(private);
        quote!(.retrying(#r))
    })
}

/// For a handler taking state: a function listing the state types, and `.needing(..)` on
/// its registration, so its queue checks at start that each is registered.
fn states(spec: &Handler, private: &TokenStream) -> (TokenStream, Option<TokenStream>) {
    let types: Vec<_> = spec
        .params
        .iter()
        .filter(|p| matches!(p.source, Source::State))
        .map(|p| &p.ty)
        .collect();
    if types.is_empty() {
        return (quote!(), None);
    }
    let needs = types
        .iter()
        .map(|ty| quote_spanned!(ty.span()=> <#ty as #private::StateParam>::need()));
    let function = quote! {
        fn __eventrabbit_states() -> ::std::vec::Vec<#private::StateNeed> {
            ::std::vec![#(#needs),*]
        }
    };
    (function, Some(quote!(.needing(__eventrabbit_states))))
}

/// A routing key as written, or `""`.
pub(crate) fn key_or_empty(key: Option<&StrArg>) -> TokenStream {
    key.map(|k| quote!(#k)).unwrap_or_else(|| quote!(""))
}

/// `::a::b` → `"::a::b"`, for `#[serde(crate = "..")]`.
fn path_string(path: &syn::Path) -> String {
    let mut out = String::new();
    if path.leading_colon.is_some() {
        out.push_str("::");
    }
    let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
    out.push_str(&segments.join("::"));
    out
}
