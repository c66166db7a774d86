use eventrabbit::consumer;

#[consumer]
async fn handler(_user_id: i64) {}

fn main() {}
