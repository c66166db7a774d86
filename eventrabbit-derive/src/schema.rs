//! The schemas the macros register beside a handler or producer, for the service's
//! AsyncAPI document: generated as small functions calling the runtime's schema helpers.

use crate::ast::{Returns, ok_is_unit, ok_type};
use crate::valid::{Handler, Producer, Source};
use proc_macro2::{TokenStream, TokenTree};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{ImplItemFn, Type};

/// The schema of `ty` from inside a generated schema function (its generator is `__g`).
fn probe(private: &TokenStream, ty: &Type) -> TokenStream {
    quote_spanned! {ty.span()=>
        {
            #[allow(unused_imports)]
            use #private::{ViaAnySchema as _, ViaJsonSchema as _};
            (&&#private::SchemaProbe::<#ty>::new()).schema(__g)
        }
    }
}

/// A schema function named `name` with `body`.
fn schema_fn(private: &TokenStream, name: &str, body: TokenStream) -> TokenStream {
    let name = quote::format_ident!("{}", name);
    quote! {
        fn #name(
            __g: &mut #private::schemars::SchemaGenerator,
        ) -> #private::schemars::Schema {
            #body
        }
    }
}

/// Whether a parameter of type `ty` may be left out of `data` (serde reads a missing
/// `Option` as `None`).
fn optional(ty: &Type) -> bool {
    matches!(ty, Type::Path(p) if p.qself.is_none()
        && p.path.segments.last().is_some_and(|s| s.ident == "Option"))
}

/// The schema of what a `Returns` answers: `T`, `T` of `Result<T, E>`, or `null`.
fn reply_body(private: &TokenStream, returns: &Returns) -> TokenStream {
    match returns {
        Returns::Unit => quote!(#private::null_schema(__g)),
        Returns::Value(ty) => probe(private, ty),
        Returns::Result(ty) if ok_is_unit(ty) => quote!(#private::null_schema(__g)),
        Returns::Result(ty) => match ok_type(ty) {
            Some(ok) => probe(private, ok),
            None => quote!(#private::unknown_schema(__g)),
        },
    }
}

/// The schema functions of a handler (items), and the registration call naming them.
pub(crate) fn handler(spec: &Handler, batch_item: Option<&Type>) -> (TokenStream, TokenStream) {
    let krate = &spec.krate;
    let private = quote!(#krate::__private);
    let data = if let Some(item) = batch_item {
        probe(&private, item)
    } else {
        let fields = spec
            .params
            .iter()
            .filter(|p| matches!(p.source, Source::Field))
            .map(|p| {
                let name = p.ident.to_string();
                let name = name.strip_prefix("r#").unwrap_or(&name).to_owned();
                let required = !optional(&p.ty);
                let schema = probe(&private, &p.ty);
                quote! {
                    #private::FieldSchema {
                        name: #name,
                        required: #required,
                        schema: |__g| #schema,
                    }
                }
            });
        let has_fields = spec
            .params
            .iter()
            .any(|p| matches!(p.source, Source::Field));
        let object = quote!(#private::object_schema(__g, &[#(#fields),*]));
        match spec
            .params
            .iter()
            .find(|p| matches!(p.source, Source::Data))
        {
            // `#[data]` beside named parameters: `data` is read as both.
            Some(p) if has_fields => {
                let whole = probe(&private, &p.ty);
                quote!(#private::all_of(::std::vec![#whole, #object]))
            }
            Some(p) => probe(&private, &p.ty),
            None => object,
        }
    };
    let reply = if batch_item.is_some() {
        quote!(#private::null_schema(__g))
    } else {
        reply_body(&private, &spec.returns)
    };
    let items = [
        schema_fn(&private, "__eventrabbit_schema_data", data),
        schema_fn(&private, "__eventrabbit_schema_reply", reply),
    ];
    (
        quote!(#(#items)*),
        quote!(.describing(__eventrabbit_schema_data, __eventrabbit_schema_reply)),
    )
}

/// Whether `tokens` name `Self`: such a type cannot be named from the registration, which
/// is an item of its own.
fn names_self(tokens: TokenStream) -> bool {
    tokens.into_iter().any(|t| match t {
        TokenTree::Ident(i) => i == "Self",
        TokenTree::Group(g) => names_self(g.stream()),
        _ => false,
    })
}

/// The statement registering a producer, put first in its body.
pub(crate) fn producer(func: &ImplItemFn, spec: &Producer) -> TokenStream {
    let krate = &spec.krate;
    let private = quote!(#krate::__private);
    let payload = match &spec.returns {
        Returns::Value(ty) => Some(ty),
        Returns::Result(ty) => ok_type(ty),
        Returns::Unit => None,
    };
    // (Generic producers are refused by validation.)
    let body = match payload {
        Some(ty) if !names_self(quote!(#ty)) => probe(&private, ty),
        _ => quote!(#private::unknown_schema(__g)),
    };
    let schema = schema_fn(&private, "__eventrabbit_schema_payload", body);
    let (exchange, action) = (&spec.exchange, &spec.action);
    let key = crate::expand::key_or_empty(spec.key.as_ref());
    let name = crate::expand::path_of(&func.sig.ident);
    quote! {
        #[doc(hidden)]
        const _: () = {
            #schema
            #private::inventory::submit! {
                #private::ProducerRegistration::new(
                    #exchange,
                    #key,
                    #action,
                    #name,
                    __eventrabbit_schema_payload,
                )
            }
        };
    }
}
