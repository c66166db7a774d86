use eventrabbit::producer;

#[producer(action = "A")]
async fn make(_user_id: i64) -> std::collections::HashMap<String, i64> { Default::default() }

fn main() {}
