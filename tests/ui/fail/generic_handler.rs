use eventrabbit::consumer;

#[consumer(action = "A")]
async fn handler<T>(_value: T) {}

fn main() {}
