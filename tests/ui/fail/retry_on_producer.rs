use eventrabbit::producer;

#[derive(serde::Serialize)]
struct Made {
    n: i64,
}

struct Service;

impl Service {
    #[producer(exchange = "x", action = "A", retry(max = 3))]
    async fn make(&self, n: i64) -> Made {
        Made { n }
    }
}

fn main() {}
