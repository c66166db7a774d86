use eventrabbit::{consumer, function};

#[consumer(action = "A", retry(attempts = 3, max = 1, max = 2))]
async fn unknown_and_duplicate() {}

#[consumer(action = "B", retry())]
async fn empty() {}

#[consumer(action = "C", retry = 3)]
async fn not_a_list() {}

#[function(action = "D", exchange = "x", retry(max = 1), retry(max = 2))]
async fn twice() {}

fn main() {}
