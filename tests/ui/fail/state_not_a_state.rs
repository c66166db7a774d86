use eventrabbit::consumer;

// `#[state]` marks an alias of `State<T>`; any other type is not filled from the state.
#[consumer(action = "A")]
async fn counter(#[state] _count: u64) {}

fn main() {}
