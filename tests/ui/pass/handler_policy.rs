use eventrabbit::{HandlerError, MessageContext, Rejected, consumer, function};

#[consumer(action = "USER_*", retry(max = 3, delay = "500ms", multiplier = 2, max_delay = "1m", jitter = true))]
async fn any_user_event(ctx: MessageContext) -> Result<(), Rejected> {
    if ctx.action().is_empty() {
        return Err(Rejected::new("no action"));
    }
    Ok(())
}

#[derive(Debug)]
struct Declined;

impl std::fmt::Display for Declined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("declined")
    }
}

impl HandlerError for Declined {
    fn is_permanent(&self) -> bool {
        true
    }
}

#[function(action = "PAY", exchange = "payments", retry(max = 0))]
async fn pay(amount: i64) -> Result<i64, Declined> {
    if amount > 0 { Ok(amount) } else { Err(Declined) }
}

#[consumer(action = "BOXED", retry(delay = "1.5s"))]
async fn boxed() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    Err(Box::new(Rejected::new("boxed")))
}

#[derive(serde::Deserialize)]
struct Metric {
    n: u64,
}

#[consumer(action = "METRIC", batch(max = 100, window = "50ms"), retry(max = 2))]
async fn metrics(#[data] items: Vec<Metric>) -> Result<(), Rejected> {
    if items.iter().any(|m| m.n == 0) {
        return Err(Rejected::new("zero"));
    }
    Ok(())
}

fn main() {}
