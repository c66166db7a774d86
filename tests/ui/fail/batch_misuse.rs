use eventrabbit::{MessageContext, consumer, function};

#[derive(serde::Deserialize)]
struct Metric {
    n: u64,
}

#[consumer(action = "A", batch(max = 0, window = "soon", size = 3))]
async fn bad_keys(_items: Vec<Metric>) {}

#[consumer(action = "B", batch(max = 10))]
async fn no_window(_items: Vec<Metric>) {}

#[consumer(action = "C", batch(max = 10, window = "50ms"))]
async fn not_a_vec(_item: Metric) {}

#[consumer(action = "D", batch(max = 10, window = "50ms"))]
async fn two_params(_items: Vec<Metric>, _ctx: MessageContext) {}

#[consumer(action = "D2", batch(max = 10, window = "50ms"))]
async fn two_context_lists(_items: Vec<Metric>, _a: Vec<MessageContext>, _b: Vec<MessageContext>) {}

#[consumer(action = "E", batch(max = 10, window = "50ms"))]
async fn returns_a_value(items: Vec<Metric>) -> u64 {
    items.len() as u64
}

#[consumer(action = "F", batch = 10)]
async fn not_a_list(_items: Vec<Metric>) {}

#[function(action = "G", exchange = "x", batch(max = 10, window = "50ms"))]
async fn on_a_function(_items: Vec<Metric>) {}

fn main() {}
