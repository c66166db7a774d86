use eventrabbit::{MessageContext, consumer, function, producer};
use serde::{Deserialize, Serialize};

const ACTION: &str = "CONST_ACTION";

#[derive(Deserialize, Serialize)]
struct Data { x: i64 }

#[consumer(action = ACTION)]
async fn by_const(_x: i64) {}

#[consumer(action = "P_DATA")]
async fn whole(#[data] d: Data, ctx: MessageContext, r#type: String) -> Result<Data, std::io::Error> {
    let _ = (ctx.retry_count(), r#type);
    Ok(d)
}

#[consumer(action = "P_NONE")]
async fn no_params() -> Data { Data { x: 1 } }

#[consumer(action = "P_UNIT_RESULT")]
async fn unit_result(_x: i64) -> Result<(), std::io::Error> { Ok(()) }

// A one-argument alias named `Result`, as anyhow and std::io have.
mod app {
    pub type Result<T> = std::result::Result<T, std::fmt::Error>;
}

#[consumer(action = "P_UNIT_ALIAS")]
async fn unit_alias(_x: i64) -> app::Result<()> { Ok(()) }

#[consumer(action = "P_VALUE_ALIAS")]
async fn value_alias(x: i64) -> app::Result<Data> { Ok(Data { x }) }

// Application state: `State<T>` by its name or path, and an alias marked `#[state]`.
struct Db;
type DbState = eventrabbit::State<Db>;

#[consumer(action = "P_STATE")]
async fn with_state(x: i64, db: eventrabbit::State<Db>, #[state] again: DbState, ctx: MessageContext) {
    let _ = (x, &*db, &*again, ctx.state::<Db>());
}

#[consumer(action = "P_STATE_BATCH", batch(max = 5, window = "5ms"))]
async fn batch_with_state(items: Vec<Data>, _db: eventrabbit::State<Db>) -> Result<(), std::io::Error> {
    let _ = items;
    Ok(())
}

#[function(action = "P_FN", exchange = "x", key = "k")]
async fn f(x: i64) -> Data { Data { x } }

#[producer(exchange = "x", action = "P_PROD")]
pub async fn produce(x: i64) -> Data {
    if x < 0 {
        return Data { x: 0 };
    }
    Data { x }
}

struct Svc;

impl Svc {
    #[producer(exchange = "x", action = "P_METHOD", key = "k")]
    async fn produce(&self, mut x: i64) -> Result<Data, eventrabbit::Error> {
        x += 1;
        Ok(Data { x })
    }
}

// A payload type the registration cannot name (`Self`) is documented as an open schema.
impl Data {
    #[producer(exchange = "x", action = "P_SELF")]
    async fn publish_self(x: i64) -> Self {
        Data { x }
    }
}

fn main() {
    let _ = Data::publish_self(1);
    let _ = produce(1);
    let _ = Svc.produce(1);
    let _ = by_const(1);
    let _ = whole;
    let _ = no_params;
    let _ = (unit_result, unit_alias, value_alias);
    let _ = f;
}
