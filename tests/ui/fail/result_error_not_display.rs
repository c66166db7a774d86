use eventrabbit::consumer;

struct NotDisplay;

#[consumer(action = "A")]
async fn handler(_value: i64) -> Result<(), NotDisplay> { Ok(()) }

fn main() {}
