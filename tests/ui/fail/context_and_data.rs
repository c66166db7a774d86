use eventrabbit::{MessageContext, consumer};

#[consumer(action = "A")]
async fn handler(#[data] #[context] _ctx: MessageContext) {}

#[consumer(action = "B")]
async fn two(_a: MessageContext, #[context] _b: eventrabbit::MessageContext) {}

fn main() {}
