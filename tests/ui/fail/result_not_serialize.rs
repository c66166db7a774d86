use eventrabbit::consumer;

struct NotSerde;

#[consumer(action = "A")]
async fn handler(_value: i64) -> NotSerde { NotSerde }

fn main() {}
