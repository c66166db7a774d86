//! Collecting several spanned errors into one report, and emitting it beside the
//! unchanged item so IDEs keep resolving it.

use proc_macro2::{Span, TokenStream};
use quote::quote;

/// Several spanned errors, reported together.
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

/// Re-emits the item beside the error so IDEs keep resolving it.
pub(crate) fn error_with(item: TokenStream, e: syn::Error) -> TokenStream {
    let err = e.into_compile_error();
    quote!(#item #err)
}
