//! The figures the benchmark produces, their targets from the issue and the closest
//! single-binary peer's reference values, rendered as the printed summary and as
//! `tests/bench/results.md`.

use std::time::Duration;

/// One row: what was measured, the figure (or why it is missing), target, reference.
pub struct Row {
    pub metric: String,
    pub value: String,
    pub target: String,
    pub reference: String,
    /// `Some(true)` meets the target, `Some(false)` misses it, `None` not judged.
    pub meets: Option<bool>,
}

impl Row {
    pub fn new(
        metric: &str,
        value: String,
        target: &str,
        reference: &str,
        meets: Option<bool>,
    ) -> Row {
        Row {
            metric: metric.to_string(),
            value,
            target: target.to_string(),
            reference: reference.to_string(),
            meets,
        }
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn verdict(m: Option<bool>) -> &'static str {
    match m {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "–",
    }
}

/// The markdown document: header facts, the table, then notes.
pub fn markdown(facts: &[(String, String)], rows: &[Row], notes: &[String]) -> String {
    let mut s = String::from("# Relaybox benchmark results\n\n");
    s += "Written by `cargo run --release -p relaybox-bench` (tests/bench). Targets and reference \
          values are from the issue; the reference is the closest single-binary peer.\n\n";
    for (k, v) in facts {
        s += &format!("- {k}: {v}\n");
    }
    s += "\n| Metric | Measured | Target | Meets | Reference (peer) |\n";
    s += "|---|---|---|---|---|\n";
    for r in rows {
        s += &format!(
            "| {} | {} | {} | {} | {} |\n",
            r.metric,
            r.value.replace('|', "\\|"),
            r.target,
            verdict(r.meets),
            r.reference
        );
    }
    if !notes.is_empty() {
        s += "\n## Notes\n\n";
        for n in notes {
            s += &format!("- {n}\n");
        }
    }
    s
}

/// A compact plain-text table for the terminal.
pub fn summary(rows: &[Row]) -> String {
    let w = rows
        .iter()
        .map(|r| r.metric.chars().count())
        .max()
        .unwrap_or(10);
    let v = rows
        .iter()
        .map(|r| r.value.chars().count())
        .max()
        .unwrap_or(10)
        .min(48);
    let t = rows
        .iter()
        .map(|r| r.target.chars().count())
        .max()
        .unwrap_or(6);
    let mut s = String::new();
    for r in rows {
        let mark = match r.meets {
            Some(true) => "ok  ",
            Some(false) => "MISS",
            None => "    ",
        };
        s += &format!(
            "{mark} {:<w$}  {:<v$}  target {:<t$}  ref {}\n",
            r.metric, r.value, r.target, r.reference
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&v, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&v, 100.0), Some(Duration::from_millis(100)));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
