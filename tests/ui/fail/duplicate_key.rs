use eventrabbit::function;

#[function(action = "A", exchange = "x", action = "B")]
async fn handler(_user_id: i64) {}

fn main() {}
