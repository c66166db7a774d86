use eventrabbit::consumer;

#[consumer(action = "A")]
async fn handler(_name: &str) {}

fn main() {}
