//! Charts of a run, as SVG under `docs/bench/` (or `BENCH_CHARTS`): the paired ratios of
//! every table row, and W6's latency distribution.

use plotters::prelude::*;
use std::path::PathBuf;
use std::sync::Mutex;

/// One table row's paired ratios.
pub struct Ratios {
    pub name: String,
    pub ratios: Vec<f64>,
    pub higher_is_better: bool,
}

static ROWS: Mutex<Vec<Ratios>> = Mutex::new(Vec::new());

/// Keeps a row for the chart.
pub fn keep(row: Ratios) {
    ROWS.lock().unwrap().push(row);
}

/// Where the charts go.
pub fn dir() -> PathBuf {
    std::env::var_os("BENCH_CHARTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/bench"))
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

/// `ratios-<which>.svg`: each row's paired ratios (dots) and their median (a bar), with
/// the parity line at 1.
pub fn write_ratios(which: &str) -> Option<PathBuf> {
    let rows = std::mem::take(&mut *ROWS.lock().unwrap());
    if rows.is_empty() {
        return None;
    }
    std::fs::create_dir_all(dir()).ok()?;
    let path = dir().join(format!("ratios-{which}.svg"));
    let all: Vec<f64> = rows.iter().flat_map(|r| r.ratios.iter().copied()).collect();
    let lo = all.iter().copied().fold(0.9, f64::min) - 0.05;
    let hi = all.iter().copied().fold(1.1, f64::max) + 0.05;
    let n = rows.len();
    let height = 90 + 34 * n as u32;
    let root = SVGBackend::new(path.as_path(), (1100, height)).into_drawing_area();
    root.fill(&WHITE).ok()?;
    let labels: Vec<String> = rows
        .iter()
        .map(|r| {
            let better = if r.higher_is_better {
                "higher"
            } else {
                "lower"
            };
            format!("{} ({better} is better)", r.name)
        })
        .collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("eventrabbit / raw client, paired runs ({which})"),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(470)
        .build_cartesian_2d(lo..hi, -0.5..(n as f64 - 0.5))
        .ok()?;
    chart
        .configure_mesh()
        .y_labels(n)
        .y_label_formatter(&|y: &f64| {
            let i = y.round();
            if (y - i).abs() < 0.01 && i >= 0.0 && (i as usize) < labels.len() {
                labels[i as usize].clone()
            } else {
                String::new()
            }
        })
        .x_desc("ratio (1 = parity)")
        .label_style(("sans-serif", 13))
        .disable_y_mesh()
        .draw()
        .ok()?;
    chart
        .draw_series(LineSeries::new(
            [(1.0, -0.5), (1.0, n as f64 - 0.5)],
            BLACK.stroke_width(1),
        ))
        .ok()?;
    for (i, row) in rows.iter().enumerate() {
        let y = i as f64;
        chart
            .draw_series(
                row.ratios
                    .iter()
                    .map(|&r| Circle::new((r, y), 4, BLUE.mix(0.5).filled())),
            )
            .ok()?;
        let m = median(&row.ratios);
        chart
            .draw_series(LineSeries::new(
                [(m, y - 0.3), (m, y + 0.3)],
                RED.stroke_width(3),
            ))
            .ok()?;
    }
    root.present().ok()?;
    drop(chart);
    drop(root);
    Some(path)
}

/// `w6-latency.svg`: latency against percentile (in nines) for both sides.
pub fn write_latency(
    title: &str,
    eventrabbit: &[(f64, f64)],
    raw: &[(f64, f64)],
) -> Option<PathBuf> {
    std::fs::create_dir_all(dir()).ok()?;
    let path = dir().join("w6-latency.svg");
    let nines = |p: f64| -(1.0 - p).max(1e-5).log10();
    let max_us = eventrabbit
        .iter()
        .chain(raw)
        .map(|(_, us)| *us)
        .fold(1.0, f64::max);
    let root = SVGBackend::new(path.as_path(), (900, 520)).into_drawing_area();
    root.fill(&WHITE).ok()?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..4.0, (10.0..max_us * 1.5).log_scale())
        .ok()?;
    chart
        .configure_mesh()
        .x_labels(5)
        .x_label_formatter(&|x: &f64| match x.round() as i64 {
            0 => "p0".into(),
            1 => "p90".into(),
            2 => "p99".into(),
            3 => "p99.9".into(),
            4 => "p99.99".into(),
            _ => String::new(),
        })
        .x_desc("percentile")
        .y_desc("latency, publish to handler start (µs)")
        .draw()
        .ok()?;
    for (points, color, name) in [(eventrabbit, RED, "eventrabbit"), (raw, BLUE, "raw lapin")] {
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|&(p, us)| (nines(p), us.max(10.0))),
                color.stroke_width(2),
            ))
            .ok()?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()
        .ok()?;
    root.present().ok()?;
    drop(chart);
    drop(root);
    Some(path)
}
