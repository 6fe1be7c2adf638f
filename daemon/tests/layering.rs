//! The daemon's layering (README "Layout"), checked from its source: every top-level module
//! of `daemon/src` has a layer in [`LAYERS`]; a `crate::` path may point to a module of the
//! same layer or a lower one, never a higher one; and the top-level modules form no cycle.
//! The edges that still break a rule are listed, each with its reason, in [`ALLOWED`] — the
//! one place for exceptions. The test fails on a new breach, on a module without a layer and
//! on an exception that no longer occurs (so the list only shrinks), and when README's
//! "Layers of the daemon" lists other modules than [`LAYERS`].
//!
//! An edge is any `crate::<module>` path, or a name inside `use crate::{…}`, outside comments
//! and test code (files named `tests.rs` or `*_tests.rs`, modules declared under a
//! `#[cfg(…test…)]`, and what follows `#[cfg(test)]` before an inline `mod`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Foundation: imports nothing above it.
const FOUNDATION: u8 = 0;
/// Services: each takes the few foundation handles it uses.
const SERVICES: u8 = 1;
/// Protocols: the listeners' sessions.
const PROTOCOLS: u8 = 2;
/// Assembly: wiring, the appliance, the binary, test and fuzz support.
const ASSEMBLY: u8 = 3;

/// Every top-level module and its layer.
const LAYERS: &[(&str, u8)] = &[
    // foundation
    ("admission", FOUNDATION),
    ("alloc", FOUNDATION),
    ("appversions", FOUNDATION),
    ("clock", FOUNDATION),
    ("config", FOUNDATION),
    ("deadline", FOUNDATION),
    ("dns", FOUNDATION),
    ("events", FOUNDATION),
    ("files", FOUNDATION),
    ("hex", FOUNDATION),
    ("logs", FOUNDATION),
    ("memory", FOUNDATION),
    ("message", FOUNDATION),
    ("metrics", FOUNDATION),
    ("moving", FOUNDATION),
    ("net", FOUNDATION),
    ("policy", FOUNDATION),
    ("private", FOUNDATION),
    ("store", FOUNDATION),
    ("tls", FOUNDATION),
    ("watchdog", FOUNDATION),
    ("work", FOUNDATION),
    // services
    ("acme", SERVICES),
    ("auth", SERVICES),
    ("delivery", SERVICES),
    ("dkim", SERVICES),
    ("expire", SERVICES),
    ("front", SERVICES),
    ("iroh", SERVICES),
    ("onboarding", SERVICES),
    ("signup", SERVICES),
    ("outbound", SERVICES),
    ("push", SERVICES),
    ("turn", SERVICES),
    ("update", SERVICES),
    ("web", SERVICES),
    ("zone", SERVICES),
    // protocols
    ("http", PROTOCOLS),
    ("imap", PROTOCOLS),
    ("mxdeliv", PROTOCOLS),
    ("smtp", PROTOCOLS),
    // assembly
    ("appliance", ASSEMBLY),
    ("backup", ASSEMBLY),
    ("control", ASSEMBLY),
    ("fdlimit", ASSEMBLY),
    ("fuzzing", ASSEMBLY),
    ("operator", ASSEMBLY),
    ("server", ASSEMBLY),
    ("testing", ASSEMBLY),
];

/// Edges that break the layering today, (from, to, why). Remove an entry when its edge is
/// gone; the test says when one is stale.
const ALLOWED: &[(&str, &str, &str)] = &[
    (
        "metrics",
        "admission",
        "the registry counts refusals by admission's reason type",
    ),
    (
        "mxdeliv",
        "http",
        "an endpoint served under http: takes http::Web, the connection's state",
    ),
];

fn layer(m: &str) -> Option<u8> {
    LAYERS.iter().find(|(n, _)| *n == m).map(|(_, l)| *l)
}

/// Source without comments and without its inline test module.
fn production_part(text: &str) -> String {
    let mut end = text.len();
    let mut from = 0;
    while let Some(i) = text[from..].find("#[cfg(test)]") {
        let at = from + i;
        let rest = text[at + "#[cfg(test)]".len()..].trim_start();
        let decl = rest
            .trim_start_matches("pub(crate) ")
            .trim_start_matches("pub ");
        // An inline module (`mod tests {`); `mod tests;` is a declaration, and what
        // follows it is production code.
        if decl.starts_with("mod ") && !decl.split('\n').next().unwrap_or("").contains(';') {
            end = at;
            break;
        }
        from = at + 1;
    }
    text[..end]
        .lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Names of the modules `text` declares under a `cfg` that mentions `test`
/// (`#[cfg(test)] mod tests;`, `#[cfg(any(test, fuzzing))] pub mod support;`).
fn test_only_modules(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = text.lines().map(str::trim).peekable();
    while let Some(l) = lines.next() {
        if l.starts_with("#[cfg(") && l.contains("test") {
            while let Some(n) = lines.peek() {
                if n.starts_with("#[") {
                    lines.next();
                    continue;
                }
                let decl = n
                    .trim_start_matches("pub ")
                    .trim_start_matches("pub(crate) ");
                if let Some(rest) = decl.strip_prefix("mod ")
                    && rest.trim_end().ends_with(';')
                {
                    out.push(ident_at(rest).to_string());
                }
                break;
            }
        }
    }
    out
}

fn ident_at(s: &str) -> &str {
    let n = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..n]
}

/// The top-level modules a source text names through `crate::`.
fn targets(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let close = group.find('}').unwrap_or(group.len());
            // Nested braces end early; their heads are still the first names.
            for part in group[..close].split(',') {
                let name = ident_at(part.trim());
                if !name.is_empty() && name != "self" {
                    out.insert(name.to_string());
                }
            }
        } else {
            let name = ident_at(after);
            if !name.is_empty() {
                out.insert(name.to_string());
            }
        }
        rest = after;
    }
    out
}

fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            walk(&p, files);
        } else if p.extension().is_some_and(|x| x == "rs") {
            files.push(p);
        }
    }
}

/// (from, to) → first file that makes the edge.
fn edges(src: &Path) -> (BTreeSet<String>, BTreeMap<(String, String), String>) {
    let mut files = Vec::new();
    walk(src, &mut files);
    files.sort();
    let texts: BTreeMap<std::path::PathBuf, String> = files
        .iter()
        .map(|f| (f.clone(), std::fs::read_to_string(f).expect("read")))
        .collect();
    // Files of modules declared test-only by their parent (and everything under them).
    let mut test_only: Vec<std::path::PathBuf> = Vec::new();
    for (f, text) in &texts {
        let dir = match f.file_name().unwrap().to_str().unwrap() {
            "mod.rs" | "lib.rs" | "main.rs" => f.parent().unwrap().to_path_buf(),
            name => f.parent().unwrap().join(name.trim_end_matches(".rs")),
        };
        for m in test_only_modules(text) {
            test_only.push(dir.join(format!("{m}.rs")));
            test_only.push(dir.join(&m));
        }
    }
    let mut modules = BTreeSet::new();
    let mut out = BTreeMap::new();
    for (f, text) in &texts {
        let rel = f.strip_prefix(src).expect("under src");
        let first = rel.components().next().expect("a component");
        let top = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if top == "lib" || top == "main" {
            continue;
        }
        modules.insert(top.clone());
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        if name == "tests.rs"
            || name.ends_with("_tests.rs")
            || test_only.iter().any(|t| f.starts_with(t))
        {
            continue;
        }
        for t in targets(&production_part(text)) {
            if t != top {
                out.entry((top.clone(), t))
                    .or_insert_with(|| rel.display().to_string());
            }
        }
    }
    (modules, out)
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(edges: &BTreeSet<(String, String)>) -> Vec<Vec<String>> {
    struct T<'a> {
        adj: BTreeMap<&'a str, Vec<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        t.on.insert(v);
        for w in t.adj.get(v).cloned().unwrap_or_default() {
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = t.stack.pop().unwrap();
                t.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        adj: BTreeMap::new(),
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for (a, b) in edges {
        t.adj.entry(a.as_str()).or_default().push(b.as_str());
        t.adj.entry(b.as_str()).or_default();
    }
    let nodes: Vec<&str> = t.adj.keys().copied().collect();
    for v in nodes {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn modules_import_only_their_layer_and_below_and_form_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let (modules, edges) = edges(&src);
    let mut problems = Vec::new();
    for m in &modules {
        if layer(m).is_none() {
            problems.push(format!(
                "module `{m}` has no layer: add it to LAYERS in daemon/tests/layering.rs"
            ));
        }
    }
    let allowed: BTreeSet<(String, String)> = ALLOWED
        .iter()
        .map(|(a, b, _)| (a.to_string(), b.to_string()))
        .collect();
    for ((a, b), file) in &edges {
        let (Some(la), Some(lb)) = (layer(a), layer(b)) else {
            continue;
        };
        if lb > la && !allowed.contains(&(a.clone(), b.clone())) {
            problems.push(format!(
                "{file}: `{a}` (layer {la}) uses `{b}` (layer {lb}), a higher layer"
            ));
        }
    }
    for (a, b, _) in ALLOWED {
        if !edges.contains_key(&(a.to_string(), b.to_string())) {
            problems.push(format!(
                "ALLOWED lists `{a}` → `{b}`, which no longer occurs: remove the entry"
            ));
        }
    }
    let kept: BTreeSet<(String, String)> = edges
        .keys()
        .filter(|e| !allowed.contains(*e))
        .cloned()
        .collect();
    // An exception must be needed: an upward edge, or one that closes a cycle.
    for (a, b, _) in ALLOWED {
        let (Some(la), Some(lb)) = (layer(a), layer(b)) else {
            continue;
        };
        let mut with = kept.clone();
        with.insert((a.to_string(), b.to_string()));
        let closes = cycles(&with)
            .iter()
            .any(|c| c.iter().any(|m| m == a) && c.iter().any(|m| m == b));
        if lb <= la && !closes {
            problems.push(format!(
                "ALLOWED lists `{a}` → `{b}`, which breaks no rule: remove the entry"
            ));
        }
    }
    for c in cycles(&kept) {
        problems.push(format!(
            "a dependency cycle between top-level modules: {}",
            c.join(", ")
        ));
    }
    assert!(
        problems.is_empty(),
        "layering (daemon/tests/layering.rs):\n  {}",
        problems.join("\n  ")
    );
}

/// The modules the README's "Layers of the daemon" list names for `layer`: the first
/// backquoted word of each comma-separated item after `- **<layer>**:`.
fn readme_layer(readme: &str, layer: &str) -> Option<BTreeSet<String>> {
    let line = readme
        .lines()
        .find(|l| l.starts_with(&format!("- **{layer}**:")))?;
    let mut out = BTreeSet::new();
    let mut depth = 0usize;
    let mut item = String::new();
    let rest = &line[line.find(':')? + 1..];
    for c in rest.chars().chain(std::iter::once(',')) {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                if let Some(name) = item.split('`').nth(1)
                    && !name.ends_with(".rs")
                {
                    out.insert(name.to_string());
                }
                item.clear();
                continue;
            }
            _ => {}
        }
        if depth == 0 {
            item.push(c);
        }
    }
    Some(out)
}

#[test]
fn the_readme_lists_the_same_layers() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    for (name, layer) in [
        ("foundation", FOUNDATION),
        ("services", SERVICES),
        ("protocols", PROTOCOLS),
        ("assembly", ASSEMBLY),
    ] {
        let listed = readme_layer(&readme, name)
            .unwrap_or_else(|| panic!("README.md has no `- **{name}**:` line"));
        let table: BTreeSet<String> = LAYERS
            .iter()
            .filter(|(_, l)| *l == layer)
            .map(|(m, _)| m.to_string())
            .collect();
        assert_eq!(
            listed, table,
            "README.md's {name} layer and LAYERS in daemon/tests/layering.rs differ"
        );
    }
}

#[test]
fn the_checker_sees_edges_groups_and_cycles() {
    let t = targets(
        "use crate::config::Config;\nuse crate::{store::Store, clock};\nlet x = crate::net::f();",
    );
    let want: BTreeSet<String> = ["config", "store", "clock", "net"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(t, want);
    assert_eq!(
        production_part("use crate::a; // crate::c\n#[cfg(test)]\nmod tests {\nuse crate::b;\n}"),
        "use crate::a; \n".trim_end_matches('\n')
    );
    assert_eq!(
        production_part("#[cfg(test)]\nmod tests;\nuse crate::a;"),
        "#[cfg(test)]\nmod tests;\nuse crate::a;"
    );
    assert_eq!(
        test_only_modules(
            "#[cfg(test)]\nmod tests;\n#[cfg(any(test, fuzzing))]\n#[allow(x)]\npub mod support;\nmod real;"
        ),
        vec!["tests".to_string(), "support".into()]
    );
    let e: BTreeSet<(String, String)> = [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]
        .iter()
        .map(|(x, y)| (x.to_string(), y.to_string()))
        .collect();
    assert_eq!(
        cycles(&e),
        vec![vec!["a".to_string(), "b".into(), "c".into()]]
    );
}
