use eventrabbit::producer;

#[derive(serde::Serialize)]
struct Made {
    n: i64,
}

#[producer(exchange = "x", action = "A", mandatory = "yes")]
async fn make(n: i64) -> Made {
    Made { n }
}

#[consumer(action = "B", mandatory = true)]
async fn handler(_n: i64) {}

use eventrabbit::consumer;

fn main() {}
