use eventrabbit::function;

#[function(action = "A")]
async fn handler(_user_id: i64) -> i64 { _user_id }

fn main() {}
