//! Edits of the operator's chatmail.ini that the wizard and the factory reset make:
//! set or remove `mail_domain` in `[params]`, keeping every other line, comment and
//! the order as they are. Validation and the atomic write are the caller's.

/// Split `key = value` / `key: value`; `None` for other lines.
fn key_of(line: &str) -> Option<&str> {
    let t = line.trim_start();
    if t.starts_with(['#', ';', '[']) {
        return None;
    }
    let end = t.find(['=', ':'])?;
    Some(t[..end].trim())
}

fn section_of(line: &str) -> Option<&str> {
    let t = line.trim();
    t.strip_prefix('[')?.strip_suffix(']').map(str::trim)
}

/// `text` with `mail_domain = value` in `[params]`: the existing line replaced (every
/// duplicate dropped), or a new line right after the `[params]` header, or a new
/// `[params]` section at the top.
pub fn set_mail_domain(text: &str, value: &str) -> String {
    edit(text, Some(value))
}

/// `text` without `mail_domain` (factory state: the daemon starts in setup mode).
pub fn remove_mail_domain(text: &str) -> String {
    edit(text, None)
}

fn edit(text: &str, value: Option<&str>) -> String {
    let mut out = String::with_capacity(text.len() + 40);
    let mut section: Option<String> = None;
    let mut placed = false;
    let mut has_params = false;
    for line in text.split_inclusive('\n') {
        if let Some(name) = section_of(line) {
            section = Some(name.to_string());
            out.push_str(line);
            if !line.ends_with('\n') {
                out.push('\n');
            }
            if name == "params" {
                has_params = true;
                if let (Some(v), false) = (value, placed) {
                    out.push_str(&format!("mail_domain = {v}\n"));
                    placed = true;
                }
            }
            continue;
        }
        if section.as_deref() == Some("params") && key_of(line) == Some("mail_domain") {
            continue;
        }
        out.push_str(line);
    }
    if let (Some(v), false) = (value, has_params) {
        out = format!("[params]\nmail_domain = {v}\n{out}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_removes_and_keeps_everything_else() {
        let text = "# my relay\n[params]\n# the domain\nmail_domain = old.org\ndata_dir = /data\n\n[other]\nmail_domain = x\n";
        let set = set_mail_domain(text, "chat.example.org");
        assert_eq!(
            set,
            "# my relay\n[params]\nmail_domain = chat.example.org\n# the domain\ndata_dir = /data\n\n[other]\nmail_domain = x\n"
        );
        let removed = remove_mail_domain(&set);
        assert_eq!(
            removed,
            "# my relay\n[params]\n# the domain\ndata_dir = /data\n\n[other]\nmail_domain = x\n"
        );
        // Set on a file without the key, and on one without [params].
        assert_eq!(
            set_mail_domain(&removed, "1.2.3.4"),
            "# my relay\n[params]\nmail_domain = 1.2.3.4\n# the domain\ndata_dir = /data\n\n[other]\nmail_domain = x\n"
        );
        assert_eq!(
            set_mail_domain("", "a.org"),
            "[params]\nmail_domain = a.org\n"
        );
        assert_eq!(
            set_mail_domain("[params]", "a.org"),
            "[params]\nmail_domain = a.org\n"
        );
    }

    #[test]
    fn duplicate_and_colon_forms_are_all_replaced() {
        let text = "[params]\nmail_domain: a.org\n  mail_domain = b.org\nmail_domainx = 1\n";
        assert_eq!(
            set_mail_domain(text, "c.org"),
            "[params]\nmail_domain = c.org\nmail_domainx = 1\n"
        );
    }
}
