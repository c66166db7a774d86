use eventrabbit::consumer;

#[consumer(action = "A", crate = "not a path!")]
async fn handler(_user_id: i64) {}

#[consumer(action = "B", crate = platform)]
async fn other(_user_id: i64) {}

fn main() {}
