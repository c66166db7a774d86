use eventrabbit::consumer;

struct S;

impl S {
    #[consumer(action = "A")]
    async fn handler(&self, _user_id: i64) {}
}

fn main() {}
