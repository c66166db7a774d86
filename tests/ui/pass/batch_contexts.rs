use eventrabbit::{MessageContext, State, consumer};

#[derive(serde::Deserialize)]
struct Metric {
    n: u64,
}

struct Db;

/// A batch handler may take each message's context, in the batch's order.
#[consumer(action = "PASS_BATCH_CTX", batch(max = 10, window = "50ms"))]
async fn with_contexts(items: Vec<Metric>, ctxs: Vec<MessageContext>, _db: State<Db>) {
    assert_eq!(items.len(), ctxs.len());
    for (item, ctx) in items.iter().zip(&ctxs) {
        let _ = (item.n, ctx.message_id());
    }
}

/// In either order.
#[consumer(action = "PASS_BATCH_CTX_FIRST", batch(max = 10, window = "50ms"))]
async fn contexts_first(ctxs: Vec<MessageContext>, items: Vec<Metric>) {
    let _ = (ctxs.len(), items.len());
}

fn main() {}
