//! Reading chatmail.ini text into `key = value` entries by section (iniconfig's rules,
//! which upstream uses): `#`/`;` comment lines, `[section]` headers, `key = value` or
//! `key: value`, indented continuation lines. What the keys mean is `keys.rs`'s business.

use super::ConfigError;

/// One `key = value` of the file.
pub(super) struct Entry {
    pub section: String,
    pub key: String,
    pub value: String,
}

/// One line of chatmail.ini as the parser reads it (iniconfig's rules, which upstream
/// uses). `appliance::configfile` goes by the same reading when it edits the file, so that
/// an edit changes exactly the key it means to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IniLine<'a> {
    /// Empty, blank, or a comment: the first non-blank character is `#` or `;`.
    Blank,
    /// `[name]`, optionally followed by a comment; `None` when the closing `]` is missing.
    Section(Option<&'a str>),
    /// An indented line: it continues the previous value (trimmed).
    Continuation(&'a str),
    /// `key = value` or `key: value`, both sides trimmed (no inline comments); `None`
    /// without a separator.
    Key(Option<(&'a str, &'a str)>),
}

/// Classifies one line (without its line ending).
pub fn ini_line(raw: &str) -> IniLine<'_> {
    let trimmed_start = raw.trim_start();
    if trimmed_start.starts_with('#') || trimmed_start.starts_with(';') {
        return IniLine::Blank;
    }
    let line = raw.trim_end();
    if line.is_empty() {
        return IniLine::Blank;
    }
    if let Some(rest) = line.strip_prefix('[') {
        // A section line may carry a trailing comment.
        let head = rest.split(['#', ';']).next().unwrap_or("").trim_end();
        return IniLine::Section(head.strip_suffix(']'));
    }
    if line.starts_with(char::is_whitespace) {
        return IniLine::Continuation(line.trim());
    }
    let kv = match line.split_once('=') {
        Some((k, v)) if !k.contains(':') => Some((k, v)),
        _ => line.split_once(':'),
    };
    IniLine::Key(kv.map(|(k, v)| (k.trim(), v.trim())))
}

/// `text` with `param = value` in `[params]` (`value` `None`: without `param`): the
/// existing line replaced (every duplicate dropped), or a new line right after the
/// `[params]` header, or a new `[params]` section at the top; every other line, comment
/// and the order kept. Lines are read as the parser reads them ([`ini_line`]): a section
/// header may carry a comment, an indented line continues the previous value (so the
/// continuation lines of a replaced or removed key go with it). Used by the wizard
/// (`mail_domain`, `appliance::configfile`) and the sign-up mode (`signup`).
pub fn edit_param(text: &str, param: &str, value: Option<&str>) -> String {
    let mut out = String::with_capacity(text.len() + 40);
    let mut section: Option<&str> = None;
    let mut placed = false;
    let mut has_params = false;
    // Inside a replaced or removed `param` (its continuation lines are dropped too).
    let mut dropping = false;
    for line in text.split_inclusive('\n') {
        let bare = line.strip_suffix('\n').unwrap_or(line);
        let bare = bare.strip_suffix('\r').unwrap_or(bare);
        match ini_line(bare) {
            IniLine::Section(Some(name)) => {
                dropping = false;
                section = Some(name);
                out.push_str(line);
                if !line.ends_with('\n') {
                    out.push('\n');
                }
                if name == "params" {
                    has_params = true;
                    if let (Some(v), false) = (value, placed) {
                        out.push_str(&format!("{param} = {v}\n"));
                        placed = true;
                    }
                }
                continue;
            }
            IniLine::Key(Some((key, _))) => {
                dropping = section == Some("params") && key == param;
            }
            IniLine::Key(None) | IniLine::Section(None) => dropping = false,
            IniLine::Continuation(_) | IniLine::Blank => {}
        }
        if dropping && !matches!(ini_line(bare), IniLine::Blank) {
            continue;
        }
        out.push_str(line);
    }
    if let (Some(v), false) = (value, has_params) {
        out = format!("[params]\n{param} = {v}\n{out}");
    }
    out
}

/// Split chatmail.ini text into entries ([`ini_line`]): comments and blank lines are
/// skipped; `[name]` opens a section; `key = value` sets a key; an indented line continues
/// the previous value on a new line.
pub(super) fn split_ini(text: &str) -> Result<Vec<Entry>, ConfigError> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut section: Option<String> = None;
    let mut seen_sections: Vec<String> = Vec::new();
    // Whether the previous non-blank line was a key (so a continuation may follow).
    let mut last_is_key = false;
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let syntax = |msg: String| ConfigError::Syntax { line: line_no, msg };
        let line = raw.trim_end();
        match ini_line(raw) {
            IniLine::Blank => {}
            IniLine::Section(None) => {
                return Err(syntax(format!(
                    "expected a section header like [params], got {line:?}"
                )));
            }
            IniLine::Section(Some(name)) => {
                let name = name.to_string();
                if seen_sections.contains(&name) {
                    return Err(syntax(format!("duplicate section [{name}]")));
                }
                seen_sections.push(name.clone());
                section = Some(name);
                last_is_key = false;
            }
            IniLine::Continuation(data) => match entries.last_mut() {
                Some(entry) if last_is_key => {
                    if entry.value.is_empty() {
                        entry.value = data.to_string();
                    } else {
                        entry.value.push('\n');
                        entry.value.push_str(data);
                    }
                }
                _ => return Err(syntax(format!("unexpected indented line {:?}", data))),
            },
            IniLine::Key(None) => {
                return Err(syntax(format!(
                    "expected `key = value`, a [section] or a # comment, got {line:?}"
                )));
            }
            IniLine::Key(Some((key, value))) => {
                if key.is_empty() {
                    return Err(syntax(format!("expected a key before `=`, got {line:?}")));
                }
                let Some(section) = section.clone() else {
                    return Err(syntax(format!(
                        "{key} appears before any section; put it under [params]"
                    )));
                };
                if entries.iter().any(|e| e.section == section && e.key == key) {
                    return Err(syntax(format!("{key} is set twice in [{section}]")));
                }
                entries.push(Entry {
                    section,
                    key: key.to_string(),
                    value: value.to_string(),
                });
                last_is_key = true;
            }
        }
    }
    Ok(entries)
}
