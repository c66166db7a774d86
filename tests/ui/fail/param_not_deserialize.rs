use eventrabbit::consumer;

struct NotSerde;

#[consumer(action = "A")]
async fn handler(_value: NotSerde) {}

fn main() {}
