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

// ---- phases with one table per run label (`--label`) ------------------------------------

/// One row of a labelled run's table.
pub struct RunRow {
    pub case: String,
    pub value: String,
    pub target: String,
    pub meets: Option<bool>,
}

/// The rows and notes of a labelled run, printed as they are added.
#[derive(Default)]
pub struct RunOut {
    pub rows: Vec<RunRow>,
    pub notes: Vec<String>,
}

impl RunOut {
    pub fn row(&mut self, case: &str, value: String, target: &str, meets: Option<bool>) {
        let mark = match meets {
            Some(true) => "ok  ",
            Some(false) => "MISS",
            None => "    ",
        };
        println!("  {mark} {case}: {value}");
        self.rows.push(RunRow {
            case: case.to_string(),
            value,
            target: target.to_string(),
            meets,
        });
    }

    pub fn failed(&mut self, case: &str, target: &str, err: &anyhow::Error) {
        let text = format!("{err:#}").replace('\n', " ");
        let short: String = text.chars().take(300).collect();
        self.row(case, format!("failed: {short}"), target, Some(false));
    }

    pub fn note(&mut self, n: String) {
        println!("  note: {n}");
        self.notes.push(n);
    }
}

/// The end of a labelled run's table header (its first column is named by the phase).
const RUN_TABLE_TAIL: &str = "| Measured | Target | Meets |";

/// One run's block of section `section`: heading, facts, the table (first column named
/// `first_col`), `extra` markdown, notes, between the run's own markers.
pub fn run_block(
    section: &str,
    label: &str,
    first_col: &str,
    facts: &[(String, String)],
    out: &RunOut,
    extra: &str,
) -> String {
    let mut s = format!("<!-- {section}-run:{label}:begin -->\n");
    s += &format!("### Run `{label}`\n\n");
    for (k, v) in facts {
        s += &format!("- {k}: {v}\n");
    }
    s += &format!("\n| {first_col} {RUN_TABLE_TAIL}\n|---|---|---|---|\n");
    for r in &out.rows {
        s += &format!(
            "| {} | {} | {} | {} |\n",
            cell(&r.case),
            cell(&r.value),
            cell(&r.target),
            verdict(r.meets)
        );
    }
    if !extra.trim().is_empty() {
        s += "\n";
        s += extra.trim_matches('\n');
        s += "\n";
    }
    if !out.notes.is_empty() {
        s += "\nNotes:\n\n";
        for n in &out.notes {
            s += &format!("- {}\n", n.replace('\n', " "));
        }
    }
    s += &format!("<!-- {section}-run:{label}:end -->");
    s
}

/// The run blocks of an existing section `section`, in order: (label, whole block text).
pub fn run_blocks(section: &str, text: &str) -> Vec<(String, String)> {
    let open = format!("<!-- {section}-run:");
    let mut blocks = Vec::new();
    let mut rest = text;
    // Bounded by the section's length: each step consumes at least one block.
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(":begin -->") else {
            break;
        };
        let label = after[..j].to_string();
        let close = format!("<!-- {section}-run:{label}:end -->");
        let Some(k) = rest[i..].find(&close) else {
            break;
        };
        let end = i + k + close.len();
        blocks.push((label, rest[i..end].to_string()));
        rest = &rest[end..];
    }
    blocks
}

/// The rows of a run block's first table: (case, measured, target, meets).
pub fn block_rows(block: &str) -> Vec<[String; 4]> {
    let mut rows = Vec::new();
    let mut in_table = false;
    for line in block.lines() {
        if !in_table {
            in_table = line.trim().starts_with('|') && line.trim().ends_with(RUN_TABLE_TAIL);
            continue;
        }
        if line.starts_with("|---") {
            continue;
        }
        match table_cells(line) {
            Some(c) if c.len() == 4 => {
                rows.push([c[0].clone(), c[1].clone(), c[2].clone(), c[3].clone()])
            }
            _ => break,
        }
    }
    rows
}

/// The headline of a measured value: the text before its first ` (` detail.
pub fn headline(v: &str) -> &str {
    v.split(" (").next().unwrap_or(v)
}

/// Write run `label`'s `block` into labelled section `section` of `results` (the other
/// labels' blocks kept, the comparison table remade; [`labelled_section_body`]).
pub fn write_labelled_run(
    results: &std::path::Path,
    section: &str,
    intro: &str,
    label: &str,
    block: &str,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let old = std::fs::read_to_string(results).unwrap_or_default();
    let body = labelled_section_body(
        section,
        intro,
        "Figure",
        self::section(&old, section).unwrap_or(""),
        label,
        block,
    );
    write_section(results, section, &body)
        .with_context(|| format!("write {}", results.display()))?;
    println!(
        "wrote the `{section}` section ({label}) of {}",
        results.display()
    );
    Ok(())
}

/// The whole body of labelled section `section`: `intro` (its heading and text), a
/// comparison table of every run label when there is more than one, then each run's
/// block (`block` for `label` replacing an older one of that label, or appended).
pub fn labelled_section_body(
    section: &str,
    intro: &str,
    first_col: &str,
    old_section: &str,
    label: &str,
    block: &str,
) -> String {
    let mut blocks = run_blocks(section, old_section);
    match blocks.iter_mut().find(|(l, _)| l == label) {
        Some(b) => b.1 = block.to_string(),
        None => blocks.push((label.to_string(), block.to_string())),
    }
    let mut s = intro.trim_end_matches('\n').to_string();
    s += "\n\n";
    // Comparison: one column per label, the headline figure and the verdict.
    let parsed: Vec<(String, Vec<[String; 4]>)> = blocks
        .iter()
        .map(|(l, b)| (l.clone(), block_rows(b)))
        .collect();
    let mut cases: Vec<(String, String)> = Vec::new();
    for (_, rows) in &parsed {
        for r in rows {
            match cases.iter_mut().find(|(c, _)| *c == r[0]) {
                Some(c) => c.1 = r[2].clone(),
                None => cases.push((r[0].clone(), r[2].clone())),
            }
        }
    }
    if parsed.len() > 1 {
        s += &format!("### Comparison\n\n| {first_col} | Target |");
        for (l, _) in &parsed {
            s += &format!(" `{}` |", l);
        }
        s += "\n|---|---|";
        for _ in &parsed {
            s += "---|";
        }
        s += "\n";
        for (case, target) in &cases {
            s += &format!("| {} | {} |", cell(case), cell(target));
            for (_, rows) in &parsed {
                let v = rows
                    .iter()
                    .find(|r| r[0] == *case)
                    .map(|r| format!("{} — {}", headline(&r[1]), r[3]))
                    .unwrap_or_else(|| "–".into());
                s += &format!(" {} |", cell(&v));
            }
            s += "\n";
        }
        s += "\n";
    }
    for (_, b) in &blocks {
        s += b;
        s += "\n\n";
    }
    s.trim_end().to_string()
}

// ---- facts of a run ---------------------------------------------------------------------

/// The 1, 5 and 15 minute load averages.
pub fn load_now() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The trimmed stdout of a command that succeeded.
pub fn command_output(cmd: &str, args: &[&str], dir: &std::path::Path) -> Option<String> {
    let out = std::process::Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The facts every labelled run starts with: date, what the relay was built from, the
/// binary and its sha256, the mode and the machine with its load averages.
pub fn run_facts(
    root: &std::path::Path,
    bin: &std::path::Path,
    commit: Option<&str>,
    mode: String,
    load_at_start: &str,
) -> Vec<(String, String)> {
    let date = command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"], root).unwrap_or_default();
    let head = command_output("git", &["rev-parse", "--short", "HEAD"], root).unwrap_or_default();
    let commit = match commit {
        Some(c) => c.to_string(),
        None => format!("{head} (HEAD of the tree the bench ran from)"),
    };
    let sha = command_output("sha256sum", &[&bin.to_string_lossy()], root)
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .map(|h| h[..12.min(h.len())].to_string())
        })
        .unwrap_or_else(|| "?".into());
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    vec![
        ("Date".into(), date),
        ("Relay built from".into(), commit),
        (
            "Relay binary".into(),
            format!("`{}` (sha256 {sha}…)", bin.display()),
        ),
        ("Mode".into(), mode),
        (
            "Machine".into(),
            format!(
                "{nproc} CPUs, load average at start {load_at_start}, at the end {}; bench and relay share it (and other work on the machine)",
                load_now()
            ),
        ),
    ]
}

/// What a labelled phase (`--hostile`, `--sdcard`) takes from the command line.
pub struct PhaseArgs {
    pub quick: bool,
    /// Run label: its table replaces the one with the same label.
    pub label: String,
    /// What the relay binary was built from (`--commit`), if known better than HEAD.
    pub commit: Option<String>,
    /// Only these cases (for development; the run's table then holds only them).
    pub cases: Option<Vec<String>>,
    /// Notes to add to the run's block (`--note`, repeatable).
    pub notes: Vec<String>,
}

impl PhaseArgs {
    /// Refuse a `--cases` name that is not one of `names` (`what`: "case", "workload").
    pub fn check_cases(&self, names: &[&str], what: &str) -> anyhow::Result<()> {
        if let Some(only) = &self.cases
            && let Some(bad) = only.iter().find(|c| !names.contains(&c.as_str()))
        {
            anyhow::bail!(
                "--cases: unknown {what} {bad:?}; the {what}s are {}",
                names.join(", ")
            );
        }
        Ok(())
    }

    /// Whether the case `name` runs (all do without `--cases`).
    pub fn wants(&self, name: &str) -> bool {
        self.cases
            .as_ref()
            .is_none_or(|only| only.iter().any(|c| c == name))
    }
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

    fn out_with(v: &str) -> RunOut {
        let mut o = RunOut::default();
        o.rows.push(RunRow {
            case: "RSS peak | x".into(),
            value: v.into(),
            target: "≤ 128 MiB".into(),
            meets: Some(false),
        });
        o
    }

    #[test]
    fn runs_are_kept_per_label() {
        let facts = vec![("Date".to_string(), "d".to_string())];
        let body = |old: &str, label: &str, block: &str| {
            labelled_section_body("sec", "## Sec\n\nintro", "Case", old, label, block)
        };
        let before = run_block(
            "sec",
            "before",
            "Case",
            &facts,
            &out_with("700 MiB (523)"),
            "",
        );
        let s1 = body("", "before", &before);
        assert!(s1.starts_with("## Sec\n\nintro\n\n<!-- sec-run:before:begin -->"));
        assert_eq!(run_blocks("sec", &s1).len(), 1);
        assert!(!s1.contains("### Comparison"));
        let extra = "#### Detail\n\n| a | b |\n|---|---|\n| 1 | 2 |";
        let after = run_block(
            "sec",
            "after",
            "Case",
            &facts,
            &out_with("60 MiB (523)"),
            extra,
        );
        assert!(
            after.contains("| RSS peak \\| x | 60 MiB (523) | ≤ 128 MiB | **no** |\n\n#### Detail")
        );
        let s2 = body(&s1, "after", &after);
        let blocks = run_blocks("sec", &s2);
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].1, before);
        assert!(s2.contains("| RSS peak \\| x | ≤ 128 MiB | 700 MiB — **no** | 60 MiB — **no** |"));
        // The extra table is not read as rows of the run's table.
        assert_eq!(block_rows(&blocks[1].1).len(), 1);
        // A second `after` run replaces the first and keeps `before`.
        let after2 = run_block(
            "sec",
            "after",
            "Case",
            &facts,
            &out_with("50 MiB (523)"),
            "",
        );
        let s3 = body(&s2, "after", &after2);
        let blocks = run_blocks("sec", &s3);
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].1, before);
        assert_eq!(blocks[1].1, after2);
        assert_eq!(block_rows(&blocks[1].1)[0][1], "50 MiB (523)");
        // Blocks of another section are not picked up.
        assert!(run_blocks("other", &s3).is_empty());
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
