//! Edits of the operator's chatmail.ini that the wizard, the factory reset and a restore
//! make: set or remove a key of `[params]` (`mail_domain`, `data_dir`), keeping every
//! other line, comment and the order as they are ([`crate::config::edit_param`], which
//! the sign-up mode uses too). Validation and the atomic write are the caller's.

use crate::config::edit_param;

/// `text` with `mail_domain = value` in `[params]`: the existing line replaced (every
/// duplicate dropped), or a new line right after the `[params]` header, or a new
/// `[params]` section at the top.
pub fn set_mail_domain(text: &str, value: &str) -> String {
    set_param(text, "mail_domain", value)
}

/// `text` without `mail_domain` (factory state: the daemon starts in setup mode).
pub fn remove_mail_domain(text: &str) -> String {
    edit_param(text, "mail_domain", None)
}

/// `text` with `key = value` in `[params]`, placed as [`set_mail_domain`] places its line.
pub fn set_param(text: &str, key: &str, value: &str) -> String {
    edit_param(text, key, Some(value))
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

    /// Found by the `config` fuzz target (fuzz/seeds/config/syntax, fuzz/regressions/config/):
    /// the edits read the file differently from the parser.
    #[test]
    fn edits_read_the_file_as_the_parser_does() {
        use crate::config::Config;
        let setup = |t: &str| Config::parse_for_serve(t).map(|l| l.config.setup);
        let domain = |t: &str| Config::parse(t).map(|l| l.config.mail_domain);
        // A section header with a comment: the reset must remove the domain...
        let commented = "[params]  # the only section\nmail_domain: chat.example.org\n";
        assert!(setup(&remove_mail_domain(commented)).unwrap());
        // ... and the wizard must not add a second [params].
        let fresh = "[params] ; set by the wizard\ndata_dir = /data\n";
        assert_eq!(domain(&set_mail_domain(fresh, "a.org")).unwrap(), "a.org");
        // The value on a continuation line goes with its key.
        let continued = "[params]\nmail_domain =\n  old.org\n\n  # c\ndata_dir = /data\n";
        assert_eq!(domain(continued).unwrap(), "old.org");
        assert!(setup(&remove_mail_domain(continued)).unwrap());
        assert_eq!(
            domain(&set_mail_domain(continued, "a.org")).unwrap(),
            "a.org"
        );
        // An indented `mail_domain = …` continues another key's value: not touched.
        let inner = "[params]\nmail_domain = a.org\nprivacy_pdo = x\n  mail_domain = y\n";
        let set = set_mail_domain(inner, "b.org");
        let c = Config::parse(&set).unwrap().config;
        assert_eq!(
            (c.mail_domain.as_str(), c.privacy_pdo.as_str()),
            ("b.org", "x\nmail_domain = y")
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
