use eventrabbit::consumer;

#[consumer(action = "A")]
async fn handler(_: i64) {}

fn main() {}
