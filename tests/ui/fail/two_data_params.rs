use eventrabbit::consumer;

#[derive(serde::Deserialize)]
struct D { x: i64 }

#[consumer(action = "A")]
async fn handler(#[data] a: D, #[data] b: D) {}

fn main() {}
