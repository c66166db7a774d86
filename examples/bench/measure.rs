//! Measuring: pairs of runs, statistics, CPU time and memory, and the table rows.

pub fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    (s[s.len() / 2], s[0], s[s.len() - 1])
}

/// Prints the medians (min–max) of both, and the median (min–max) of the per-run ratios:
/// each run pairs an eventrabbit and a raw measurement taken back to back, so the ratio
/// is less exposed to the machine's drift than a ratio of medians.
pub fn row(name: &str, unit: &str, er: &[f64], raw: &[f64], higher_is_better: bool) {
    let (em, elo, ehi) = stats(er);
    let (rm, rlo, rhi) = stats(raw);
    let ratios: Vec<f64> = er.iter().zip(raw).map(|(e, r)| e / r).collect();
    let (ratio, rat_lo, rat_hi) = stats(&ratios);
    crate::charts::keep(crate::charts::Ratios {
        name: name.to_owned(),
        ratios: ratios.clone(),
        higher_is_better,
    });
    let better = if higher_is_better { "higher" } else { "lower" };
    println!(
        "| {name} | {em:.1} ({elo:.1}–{ehi:.1}) {unit} | {rm:.1} ({rlo:.1}–{rhi:.1}) {unit} | {ratio:.3} ({rat_lo:.3}–{rat_hi:.3}) | {better} is better |"
    );
}

/// One run's pair, on stderr (the table on stdout stays plain Markdown).
pub fn run_line(name: &str, i: usize, er: f64, raw: f64, unit: &str) {
    eprintln!(
        "  {name} run {}: eventrabbit {er:.1} {unit}, raw {raw:.1} {unit}, ratio {:.3}",
        i + 1,
        er / raw
    );
}

/// Runs `a` then `b` on even runs and `b` then `a` on odd ones.
pub async fn paired<A, B, FA, FB, T>(i: usize, a: FA, b: FB) -> (T, T)
where
    FA: FnOnce() -> A,
    FB: FnOnce() -> B,
    A: std::future::Future<Output = T>,
    B: std::future::Future<Output = T>,
{
    if i.is_multiple_of(2) {
        let x = a().await;
        (x, b().await)
    } else {
        let y = b().await;
        (a().await, y)
    }
}

/// CPU time (user + system, all threads) this process has used, in seconds.
pub fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    stat_cpu_secs(&stat).map_or(0.0, |(_, secs)| secs)
}

/// A `/proc/<pid>/stat` line's command name and CPU time (user + system), in seconds.
fn stat_cpu_secs(stat: &str) -> Option<(&str, f64)> {
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1;
    // Fields after the `(comm)`: state is field 3; utime and stime are fields 14 and 15.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    Some((name, (ticks(11)? + ticks(12)?) / 100.0))
}

/// CPU time (user + system) used so far by every process of this host named `comm`
/// (`beam.smp` for RabbitMQ, `postgres` for PostgreSQL and its backends), in seconds.
/// Processes that ended meanwhile are not counted: a caller compares two readings over a
/// window in which the servers' processes live on.
pub fn host_cpu_secs(comm: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|stat| {
            stat_cpu_secs(&stat).and_then(|(name, secs)| (name == comm).then_some(secs))
        })
        .sum()
}

/// CPU seconds of the broker, the database and this process at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostCpu {
    pub broker: f64,
    pub database: f64,
    pub client: f64,
}

impl HostCpu {
    pub fn now() -> Self {
        Self {
            broker: host_cpu_secs("beam.smp"),
            database: host_cpu_secs("postgres"),
            client: cpu_secs(),
        }
    }

    /// The CPU used since `self`, in µs per one of `n` events.
    pub fn per_event_since(self, n: u64) -> Self {
        let now = Self::now();
        let per = |a: f64, b: f64| (b - a) * 1e6 / n as f64;
        Self {
            broker: per(self.broker, now.broker),
            database: per(self.database, now.database),
            client: per(self.client, now.client),
        }
    }

    pub fn total(self) -> f64 {
        self.broker + self.database + self.client
    }
}

/// Runs `fut` and returns its output with the CPU seconds the process spent meanwhile.
pub async fn with_cpu<T>(fut: impl std::future::Future<Output = T>) -> (T, f64) {
    let before = cpu_secs();
    let out = fut.await;
    (out, cpu_secs() - before)
}

pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Per-thread CPU ticks and context switches (for profiling; `BENCH_THREADS=1`).
pub fn thread_report(label: &str) {
    if std::env::var_os("BENCH_THREADS").is_none() {
        return;
    }
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    for t in dir.flatten() {
        let p = t.path();
        let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(p.join("status")).unwrap_or_default();
        let stat = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let get = |k: &str| {
            status
                .lines()
                .find(|l| l.starts_with(k))
                .and_then(|l| l.split_whitespace().nth(1))
                .unwrap_or("?")
                .to_owned()
        };
        println!(
            "{label} {:>20} utime {:>4} stime {:>4} vol {:>6} invol {:>6}",
            comm.trim(),
            f.get(11).unwrap_or(&"?"),
            f.get(12).unwrap_or(&"?"),
            get("voluntary_ctxt_switches"),
            get("nonvoluntary_ctxt_switches")
        );
    }
}
