use eventrabbit::producer;

#[producer(exchange = "x", action = "A")]
async fn make(_user_id: i64) {}

fn main() {}
