//! README.md's key tables are generated from the key table (`keys.rs`): the test here
//! fails, naming each key that differs, when the two drift apart.
//! `RELAYBOX_BLESS=1 cargo test -p relaybox --lib config::readme` rewrites the README's
//! tables from the code.

use std::path::PathBuf;

use super::keys::{KEYS, Key, Origin};

/// Opens a generated table: `<!-- config keys: upstream -->`.
const BEGIN: &str = "<!-- config keys: ";
/// Closes it.
const END: &str = "<!-- end of config keys -->";
const HEADER: &str = "| key | default | dev mode (`relaybox dev`) | meaning |";
const RULE: &str = "|---|---|---|---|";

fn tag(origin: Origin) -> &'static str {
    match origin {
        Origin::Upstream => "upstream",
        Origin::Relaybox => "relaybox",
    }
}

fn row(key: &dyn Key) -> String {
    format!(
        "| `{}` | {} | {} | {} |",
        key.name(),
        key.default_doc(),
        key.dev_doc(),
        key.help()
    )
}

/// The lines of the table of `origin`'s keys, as the README should have them.
pub fn table(origin: Origin) -> Vec<String> {
    let mut lines = vec![HEADER.to_string(), RULE.to_string()];
    lines.extend(
        KEYS.iter()
            .filter(|k| k.origin() == origin)
            .map(|k| row(*k)),
    );
    lines
}

/// Where the table of `origin` sits in `readme`: the byte range of its lines (after the
/// opening marker, before the closing one).
fn block(readme: &str, origin: Origin) -> Option<std::ops::Range<usize>> {
    let open = format!("{BEGIN}{} -->\n", tag(origin));
    let start = readme.find(&open)? + open.len();
    let end = start + readme[start..].find(END)?;
    Some(start..end)
}

/// The README's key column of a row: `` `name` `` → `name`.
fn key_of(line: &str) -> &str {
    line.trim_start_matches('|')
        .split(" | ")
        .next()
        .unwrap_or("")
        .trim()
        .trim_matches('`')
}

/// How `readme`'s tables differ from the code's; empty when they agree.
pub fn problems(readme: &str) -> Vec<String> {
    const COLUMNS: [&str; 4] = ["key", "default", "dev-mode default", "meaning"];
    let mut out = Vec::new();
    for origin in [Origin::Upstream, Origin::Relaybox] {
        let Some(range) = block(readme, origin) else {
            out.push(format!(
                "no {} key table (a line `{BEGIN}{} -->`, the table, then `{END}`)",
                tag(origin),
                tag(origin)
            ));
            continue;
        };
        let got: Vec<&str> = readme[range].lines().collect();
        let want = table(origin);
        for (i, line) in [HEADER, RULE].iter().enumerate() {
            if got.get(i) != Some(line) {
                out.push(format!(
                    "{} table: line {} should be {line:?}",
                    tag(origin),
                    i + 1
                ));
            }
        }
        let got_rows: Vec<&str> = got.iter().skip(2).copied().collect();
        let want_rows: Vec<&str> = want.iter().skip(2).map(String::as_str).collect();
        for w in &want_rows {
            let name = key_of(w);
            match got_rows.iter().find(|g| key_of(g) == name) {
                None => out.push(format!("`{name}`: missing from the README")),
                Some(g) if g != w => {
                    let cells = |l: &str| -> Vec<String> {
                        l.trim()
                            .trim_matches('|')
                            .split(" | ")
                            .map(|c| c.trim().to_string())
                            .collect()
                    };
                    let (gc, wc) = (cells(g), cells(w));
                    let mut told = false;
                    for (i, column) in COLUMNS.iter().enumerate() {
                        if gc.get(i) != wc.get(i) {
                            told = true;
                            out.push(format!(
                                "`{name}`: {column} is {:?} in the code, {:?} in the README",
                                wc.get(i).map_or("", String::as_str),
                                gc.get(i).map_or("", String::as_str)
                            ));
                        }
                    }
                    if !told {
                        out.push(format!("`{name}`: row should be {w:?}, is {g:?}"));
                    }
                }
                Some(_) => {}
            }
        }
        for g in &got_rows {
            let name = key_of(g);
            if !want_rows.iter().any(|w| key_of(w) == name) {
                out.push(format!(
                    "`{name}`: in the README's {} table but not a {} key of the code",
                    tag(origin),
                    tag(origin)
                ));
            }
        }
        if out.is_empty() && got_rows != want_rows {
            out.push(format!(
                "{} table: rows are not in the code's order",
                tag(origin)
            ));
        }
    }
    out
}

/// `readme` with its tables replaced by the code's.
pub fn regenerate(readme: &str) -> String {
    let mut text = readme.to_string();
    for origin in [Origin::Upstream, Origin::Relaybox] {
        if let Some(range) = block(&text, origin) {
            let mut lines = table(origin).join("\n");
            lines.push('\n');
            text.replace_range(range, &lines);
        }
    }
    text
}

fn readme_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md")
}

#[test]
fn readme_key_tables_match_the_code() {
    let path = readme_path();
    let readme = std::fs::read_to_string(&path).expect("README.md");
    let found = problems(&readme);
    if found.is_empty() {
        return;
    }
    if std::env::var_os("RELAYBOX_BLESS").is_some() {
        std::fs::write(&path, regenerate(&readme)).expect("write README.md");
        let again = std::fs::read_to_string(&path).expect("README.md");
        assert_eq!(problems(&again), Vec::<String>::new());
        return;
    }
    panic!(
        "README.md's key tables differ from daemon/src/config/keys.rs:\n  {}\n\
         (`RELAYBOX_BLESS=1 cargo test -p relaybox --lib config::readme` rewrites the \
         README's tables from the code)",
        found.join("\n  ")
    );
}

/// The check finds each kind of drift (so the test above can fail).
#[test]
fn the_check_finds_drift() {
    let readme = regenerate(&format!(
        "# x\n\n{BEGIN}upstream -->\n{END}\n\ntext\n\n{BEGIN}relaybox -->\n{END}\n"
    ));
    assert_eq!(problems(&readme), Vec::<String>::new(), "{readme}");
    let line_of = |name: &str| {
        readme
            .lines()
            .find(|l| l.starts_with(&format!("| `{name}` |")))
            .unwrap_or_else(|| panic!("{name} not in {readme}"))
            .to_string()
    };
    let has = |text: &str, says: &str| {
        let p = problems(text);
        assert!(
            p.iter().any(|m| m.contains(says)),
            "{says:?} not among {p:?}"
        );
    };
    // A key left out.
    let row = line_of("max_mailbox_size");
    has(
        &readme.replace(&format!("{row}\n"), ""),
        "`max_mailbox_size`: missing from the README",
    );
    // A different default and dev-mode default.
    let row = line_of("smtpd_timeout");
    has(
        &readme.replace(&row, &row.replacen("`300s`", "`200s`", 1)),
        "`smtpd_timeout`: default is \"`300s`\" in the code, \"`200s`\" in the README",
    );
    let row = line_of("log_stderr");
    has(
        &readme.replace(&row, &row.replacen("`true`", "same", 1)),
        "`log_stderr`: dev-mode default is",
    );
    // A key the code does not have, or in the other table.
    let row = line_of("dkim_selector");
    has(
        &readme.replace(
            &row,
            &format!("{row}\n{}", row.replace("dkim_selector", "dkim_sel")),
        ),
        "`dkim_sel`: in the README's relaybox table but not a relaybox key",
    );
    let upstream_row = line_of("www_folder");
    has(
        &readme.replace(&row, &format!("{row}\n{upstream_row}")),
        "`www_folder`: in the README's relaybox table",
    );
    // Rows swapped.
    let (a, b) = (line_of("led"), line_of("button"));
    has(
        &readme
            .replace(&a, "\u{0}")
            .replace(&b, &a)
            .replace('\u{0}', &b),
        "rows are not in the code's order",
    );
    // No table at all.
    has("# README\n", "no upstream key table");
}
