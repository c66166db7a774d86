use eventrabbit::consumer;

#[consumer(action = "A")]
async fn handler((a, b): (i64, i64)) {}

fn main() {}
