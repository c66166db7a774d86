use eventrabbit::consumer;

#[consumer(action)]
async fn handler(_user_id: i64) {}

fn main() {}
