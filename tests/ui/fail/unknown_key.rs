use eventrabbit::consumer;

#[consumer(action = "A", exchange = "x")]
async fn handler(_user_id: i64) {}

fn main() {}
