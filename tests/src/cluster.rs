//! The local 3-node cluster of `scripts/cluster`, for the cluster fault tests: started
//! on first use if it is not running, nodes killed and started by number.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/cluster")
}

fn run(args: &[&str]) -> String {
    let out = Command::new(script())
        .args(args)
        .output()
        .expect("scripts/cluster runs");
    assert!(
        out.status.success(),
        "scripts/cluster {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The cluster's AMQP URLs, comma-separated; starts the cluster (about 15 s) if it is not
/// running. Fails loudly, saying how to start it by hand, when it cannot.
pub fn cluster_urls() -> &'static str {
    static URLS: OnceLock<String> = OnceLock::new();
    URLS.get_or_init(|| {
        run(&["start"]);
        run(&["urls"]).trim().to_owned()
    })
}

/// The node (1..3) an AMQP URL or `host:port` of the cluster points to.
pub fn node_of(url: &str) -> usize {
    (1..=3)
        .find(|n| url.contains(&format!(":{}", 5680 + n)))
        .unwrap_or_else(|| panic!("`{url}` is not a node of the local cluster"))
}

/// The AMQP URL of node `n`.
pub fn node_url(n: usize) -> String {
    format!("amqp://guest:guest@127.0.0.1:{}/%2f", 5680 + n)
}

/// Kills node `n` hard (`kill -9`).
pub fn kill_node(n: usize) {
    run(&["kill", &n.to_string()]);
}

/// Stops node `n` cleanly.
pub fn stop_node(n: usize) {
    run(&["stop-node", &n.to_string()]);
}

/// Starts node `n` again and waits until it runs.
pub fn start_node(n: usize) {
    run(&["start-node", &n.to_string()]);
}

/// Starts every node that is down and waits until the cluster is whole.
pub fn heal() {
    run(&["start"]);
}

/// `rabbitmqctl -n <node> ...` on node `n`.
pub fn ctl(n: usize, args: &[&str]) -> String {
    let out = Command::new("rabbitmqctl")
        .args(["-q", "-n", &format!("eventrabbit-c{n}@localhost")])
        .args(args)
        .output()
        .expect("rabbitmqctl runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The node (1..3) leading quorum queue `queue`, asked of node `via`.
pub fn leader_of(queue: &str, via: usize) -> Option<usize> {
    let listing = ctl(
        via,
        &["list_queues", "--no-table-headers", "name", "leader"],
    );
    listing.lines().find_map(|l| {
        let (name, leader) = l.split_once('\t')?;
        (name == queue).then(|| (1..=3).find(|n| leader.contains(&format!("eventrabbit-c{n}@"))))?
    })
}
