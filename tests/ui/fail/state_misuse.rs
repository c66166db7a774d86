use eventrabbit::{State, consumer};

struct Db;

#[derive(serde::Deserialize)]
struct Item {}

// A parameter is filled one way only.
#[consumer(action = "A")]
async fn two_markers(#[state] #[data] _db: State<Db>) {}

// The type says which state: the marker takes no arguments.
#[consumer(action = "B")]
async fn marker_with_arguments(#[state(Db)] _db: State<Db>) {}

// A batch handler takes one `Vec` of messages besides its state.
#[consumer(action = "C", batch(max = 10, window = "10ms"))]
async fn batch_with_two_vecs(_a: Vec<Item>, _b: Vec<Item>, _db: State<Db>) {}

fn main() {}
