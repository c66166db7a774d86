use eventrabbit::{consumer, function};

#[consumer(action = "USER_**")]
async fn double_star() {}

#[consumer(action = "*")]
async fn everything() {}

#[function(action = "ORDER_*", exchange = "orders")]
async fn no_reply_action() -> i64 {
    1
}

fn main() {}
