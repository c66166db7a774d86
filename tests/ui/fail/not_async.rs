use eventrabbit::consumer;

#[consumer(action = "A")]
fn handler(_user_id: i64) {}

fn main() {}
