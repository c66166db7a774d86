//! [`Middleware`]: reusable layers around every handler of a queue (or of all queues), for
//! what cuts across handlers: checking headers, timing, idempotency, validation.
//!
//! A trait of our own rather than `tower`: a layer here sees one message and decides one
//! outcome, with no readiness to poll (the prefetch window is the back-pressure), no
//! service to clone per call and no request or response type to name; one async method
//! is all it takes, and the core needs no extra dependency.

use super::batch::{BatchFn, BatchSpec, Batcher};
use super::context::MessageContext;
use super::input::{Failure, Input, Reply};
use super::registration::HandlerFn;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// What a handler (or a layer) made of a message: a reply to settle with, or why not.
/// `Err(Failure::Rejected(..))` dead-letters it at once, `Err(Failure::Failed(..))` retries
/// it, `Err(Failure::Invalid(..))` dead-letters it as invalid data.
pub type Outcome = Result<Reply, Failure>;

/// The future a layer returns.
pub type BoxOutcome<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// A layer around handlers. It may look at the message, decide on its own (reject it,
/// fail it, skip the handler with [`Reply::none`]), or run the rest of the chain with
/// [`Next::run`] and look at its outcome.
///
/// ```
/// use eventrabbit::middleware::{BoxOutcome, Failure, Middleware, Next};
/// use eventrabbit::MessageContext;
///
/// /// Refuses messages without an `x-tenant` header, for good.
/// struct RequireTenant;
///
/// impl Middleware for RequireTenant {
///     fn call<'a>(&'a self, ctx: &'a MessageContext, next: Next<'a>) -> BoxOutcome<'a> {
///         Box::pin(async move {
///             if ctx.header_str("x-tenant").is_none() {
///                 return Err(Failure::Rejected("no x-tenant header".into()));
///             }
///             next.run().await
///         })
///     }
/// }
/// ```
pub trait Middleware: Send + Sync + 'static {
    /// Handles one message: `next.run()` runs the inner layers and the handler.
    fn call<'a>(&'a self, ctx: &'a MessageContext, next: Next<'a>) -> BoxOutcome<'a>;

    /// A name for logs and `Debug` (the type's name by default).
    fn name(&self) -> &str {
        std::any::type_name::<Self>()
    }
}

/// How the handler at the end of the chain is called: on its own, or by joining a batch.
#[derive(Clone, Copy)]
pub(crate) enum Call<'a> {
    Single(HandlerFn),
    Batch(&'a Batcher, BatchSpec, BatchFn),
}

impl<'a> Call<'a> {
    pub(crate) fn run(self, input: Input) -> BoxOutcome<'a> {
        match self {
            Call::Single(call) => call(input),
            Call::Batch(batcher, spec, call) => Box::pin(batcher.submit(spec, call, input)),
        }
    }
}

/// The rest of the chain: the inner layers, then the handler.
pub struct Next<'a> {
    rest: &'a [Arc<dyn Middleware>],
    ctx: &'a MessageContext,
    handler: Call<'a>,
    input: Input,
}

impl fmt::Debug for Next<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Next")
            .field("layers_left", &self.rest.len())
            .finish_non_exhaustive()
    }
}

impl<'a> Next<'a> {
    /// Runs the inner layers and the handler; their outcome.
    pub fn run(self) -> BoxOutcome<'a> {
        match self.rest.split_first() {
            Some((layer, rest)) => layer.call(
                self.ctx,
                Next {
                    rest,
                    ctx: self.ctx,
                    handler: self.handler,
                    input: self.input,
                },
            ),
            None => self.handler.run(self.input),
        }
    }
}

/// Runs `handler` on `input` through `layers`, outermost first.
pub(crate) fn run_through<'a>(
    layers: &'a [Arc<dyn Middleware>],
    ctx: &'a MessageContext,
    handler: Call<'a>,
    input: Input,
) -> BoxOutcome<'a> {
    Next {
        rest: layers,
        ctx,
        handler,
        input,
    }
    .run()
}

/// Layers, compared by identity (two configurations are equal when they share the very
/// same layers).
#[derive(Clone, Default)]
pub struct Layers(pub(crate) Vec<Arc<dyn Middleware>>);

impl Layers {
    /// No layer.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// These layers, then `layer` inside them.
    #[must_use]
    pub fn with(mut self, layer: impl Middleware) -> Self {
        self.0.push(Arc::new(layer));
        self
    }

    pub(crate) fn push(&mut self, layer: Arc<dyn Middleware>) {
        self.0.push(layer);
    }

    /// Whether there is none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `self`'s layers around `inner`'s.
    pub(crate) fn around(&self, inner: &Layers) -> Layers {
        Layers(self.0.iter().chain(&inner.0).cloned().collect())
    }
}

impl fmt::Debug for Layers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|l| l.name()))
            .finish()
    }
}

impl PartialEq for Layers {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len() && self.0.iter().zip(&other.0).all(|(a, b)| Arc::ptr_eq(a, b))
    }
}
