//! The figures the benchmark produces, their targets from the issue and the closest
//! single-binary peer's reference values, rendered as the printed summary and as
//! `tests/bench/results.md`. The results file holds one section per phase between
//! `<!-- NAME:begin -->` and `<!-- NAME:end -->` markers; a phase replaces only its own
//! section ([`write_section`]).

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

/// Title of the results file.
pub const TITLE: &str = "# Relaybox benchmark results";
/// Heading of the main phase's section.
const MAIN_HEADING: &str = "## Main benchmark";

/// The main phase's section: heading, header facts, the table, then notes.
pub fn markdown(facts: &[(String, String)], rows: &[Row], notes: &[String]) -> String {
    let mut s = format!("{MAIN_HEADING}\n\n");
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
        s += "\n### Notes\n\n";
        for n in notes {
            s += &format!("- {n}\n");
        }
    }
    s
}

fn begin_marker(name: &str) -> String {
    format!("<!-- {name}:begin -->")
}

fn end_marker(name: &str) -> String {
    format!("<!-- {name}:end -->")
}

/// The text between the markers of section `name` (without them), if present.
pub fn section<'a>(doc: &'a str, name: &str) -> Option<&'a str> {
    let (b, e) = (begin_marker(name), end_marker(name));
    let start = doc.find(&b)? + b.len();
    let len = doc[start..].find(&e)?;
    Some(doc[start..start + len].trim_matches('\n'))
}

/// `doc` with section `name` set to `body`: replaced in place if present, else
/// appended at the end. Other sections and text are kept byte for byte. A document
/// without any section marker (the single-phase file of earlier versions) is first
/// wrapped whole, below its title, as the `main` section.
pub fn replace_section(doc: &str, name: &str, body: &str) -> String {
    let doc = adopt_legacy(doc);
    let block = format!(
        "{}\n{}\n{}",
        begin_marker(name),
        body.trim_matches('\n'),
        end_marker(name)
    );
    let (b, e) = (begin_marker(name), end_marker(name));
    if let Some(start) = doc.find(&b)
        && let Some(len) = doc[start..].find(&e)
    {
        let end = start + len + e.len();
        return format!("{}{block}{}", &doc[..start], &doc[end..]);
    }
    let mut out = doc.trim_end().to_string();
    if out.is_empty() {
        out = TITLE.to_string();
    }
    format!("{out}\n\n{block}\n")
}

/// A marker-less document becomes `TITLE` + the old body as the `main` section.
fn adopt_legacy(doc: &str) -> String {
    if doc.trim().is_empty() || doc.contains(":begin -->") {
        return doc.to_string();
    }
    let body = doc.strip_prefix(TITLE).unwrap_or(doc).trim_matches('\n');
    let body = body.replace("\n## Notes\n", "\n### Notes\n");
    format!(
        "{TITLE}\n\n{}\n{MAIN_HEADING}\n\n{body}\n{}\n",
        begin_marker("main"),
        end_marker("main")
    )
}

/// Replace section `name` of the file at `path` (created if missing) with `body`.
pub fn write_section(path: &std::path::Path, name: &str, body: &str) -> std::io::Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    std::fs::write(path, replace_section(&old, name, body))
}

/// Markdown table cells of a `| a | b \| c |` line, `\|` unescaped.
pub fn table_cells(line: &str) -> Option<Vec<String>> {
    let inner = line.trim().strip_prefix('|')?.strip_suffix('|')?;
    let mut cells = Vec::new();
    let mut cur = String::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cur.push('|');
                chars.next();
            }
            '|' => cells.push(std::mem::take(&mut cur).trim().to_string()),
            _ => cur.push(c),
        }
    }
    cells.push(cur.trim().to_string());
    Some(cells)
}

/// A table cell: `|` escaped, line breaks flattened.
pub fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
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

    #[test]
    fn sections_replace_only_their_own() {
        let legacy = "# Relaybox benchmark results\n\nWritten by x\n\n| a |\n\n## Notes\n\n- n\n";
        let d = replace_section(legacy, "hostile", "H1");
        assert!(d.starts_with("# Relaybox benchmark results\n\n<!-- main:begin -->\n## Main"));
        assert_eq!(section(&d, "hostile"), Some("H1"));
        assert!(
            section(&d, "main")
                .expect("main")
                .contains("### Notes\n\n- n")
        );
        let d2 = replace_section(&d, "fuzz", "F");
        let d3 = replace_section(&d2, "hostile", "H2\nmore");
        assert_eq!(section(&d3, "hostile"), Some("H2\nmore"));
        assert_eq!(section(&d3, "fuzz"), Some("F"));
        assert_eq!(section(&d3, "main"), section(&d, "main"));
        // The main phase replaces its own section and keeps the others.
        let d4 = replace_section(&d3, "main", "## Main benchmark\n\nnew");
        assert_eq!(section(&d4, "main"), Some("## Main benchmark\n\nnew"));
        assert_eq!(section(&d4, "hostile"), Some("H2\nmore"));
        assert!(d4.find("main:begin") < d4.find("hostile:begin"));
        assert!(d4.find("hostile:begin") < d4.find("fuzz:begin"));
        // From nothing.
        let e = replace_section("", "hostile", "H");
        assert!(e.starts_with("# Relaybox benchmark results\n\n<!-- hostile:begin -->"));
    }

    #[test]
    fn cells() {
        assert_eq!(
            table_cells("| a | b \\| c | d |"),
            Some(vec!["a".into(), "b | c".into(), "d".into()])
        );
        assert_eq!(table_cells("no table"), None);
    }
}
