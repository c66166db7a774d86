use eventrabbit::consumer;

#[consumer(action = "A")]
async fn handler(#[context] _ctx: String) {}

fn main() {}
