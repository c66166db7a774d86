use eventrabbit::consumer;

#[consumer(action = "A", retry(max = -1, delay = "fast", multiplier = 0.5, jitter = "yes"))]
async fn bad_values() {}

#[consumer(action = "B", retry(delay = "5 weeks", max_delay = "10"))]
async fn bad_units() {}

#[consumer(action = "C", retry(delay = "2m", max_delay = "1m"))]
async fn cap_below_delay() {}

#[consumer(action = "D", retry(delay = "0ms"))]
async fn zero_delay() {}

fn main() {}
