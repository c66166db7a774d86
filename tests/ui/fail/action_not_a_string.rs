use eventrabbit::consumer;

#[consumer(action = 42)]
async fn handler(_user_id: i64) {}

fn main() {}
