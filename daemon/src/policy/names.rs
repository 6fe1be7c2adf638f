//! Account-name rules (spec/relay.md ACC-2, ACC-3, ACC-5): which logins are served and
//! which unknown logins may create an account.

/// The limits of ACC-5 that come from the config.
#[derive(Debug, Clone)]
pub struct NameRules {
    /// `@example.org` or `@[127.0.0.1]`, lower-case.
    pub address_domain: String,
    pub username_min_length: usize,
    pub username_max_length: usize,
    pub password_min_length: usize,
}

/// Why a login can never succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefused {
    /// ACC-2: a character outside `a-z A-Z 0-9 . - _ @ [ ]`.
    BadCharacter,
    /// ACC-3: not `…@<address domain>`.
    ForeignDomain,
}

/// ACC-2 and ACC-3: lower-case the login and check its characters and domain.
/// Returns the canonical address to look up.
pub fn canonical_login(login: &str, rules: &NameRules) -> Result<String, LoginRefused> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@' | '[' | ']');
    if login.is_empty() || !login.chars().all(ok) {
        return Err(LoginRefused::BadCharacter);
    }
    let lower = login.to_ascii_lowercase();
    let suffix = format!("@{}", rules.address_domain.to_ascii_lowercase());
    if !lower.ends_with(&suffix) || lower.len() == suffix.len() {
        return Err(LoginRefused::ForeignDomain);
    }
    Ok(lower)
}

/// ACC-5 steps 2–5 for a canonical address: may this unknown login create an account?
/// Returns the reason for the `registration rejected:` log line otherwise.
pub fn may_create(address: &str, password: &str, rules: &NameRules) -> Result<(), String> {
    if password.len() < rules.password_min_length {
        return Err(format!(
            "password shorter than {} characters",
            rules.password_min_length
        ));
    }
    let mut parts = address.split('@');
    let (Some(local), Some(_), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err("address must contain exactly one @".into());
    };
    let n = local.chars().count();
    if n < rules.username_min_length || n > rules.username_max_length {
        return Err(format!(
            "local part length {n} outside {}..={}",
            rules.username_min_length, rules.username_max_length
        ));
    }
    if !local
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("local part must match ^[a-z0-9._-]+$".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> NameRules {
        NameRules {
            address_domain: "example.org".into(),
            username_min_length: 9,
            username_max_length: 9,
            password_min_length: 9,
        }
    }

    #[test]
    fn canonical_login_table() {
        let r = rules();
        let table: &[(&str, Result<&str, LoginRefused>)] = &[
            ("abcdefghi@example.org", Ok("abcdefghi@example.org")),
            ("ABCDEFGHI@Example.ORG", Ok("abcdefghi@example.org")),
            ("a.b-c_d@example.org", Ok("a.b-c_d@example.org")),
            ("abc+ext@example.org", Err(LoginRefused::BadCharacter)),
            ("abc def@example.org", Err(LoginRefused::BadCharacter)),
            ("abcdefghi@other.org", Err(LoginRefused::ForeignDomain)),
            (
                "abcdefghi@sub.example.org.evil",
                Err(LoginRefused::ForeignDomain),
            ),
            ("abcdefghi", Err(LoginRefused::ForeignDomain)),
            ("@example.org", Err(LoginRefused::ForeignDomain)),
            ("", Err(LoginRefused::BadCharacter)),
            ("üser@example.org", Err(LoginRefused::BadCharacter)),
        ];
        for (login, want) in table {
            let got = canonical_login(login, &r);
            assert_eq!(got.as_deref().map_err(|e| *e), *want, "{login}");
        }
    }

    #[test]
    fn ip_literal_domain() {
        let r = NameRules {
            address_domain: "[127.0.0.1]".into(),
            ..rules()
        };
        assert_eq!(
            canonical_login("abcdefghi@[127.0.0.1]", &r).unwrap(),
            "abcdefghi@[127.0.0.1]"
        );
        assert!(canonical_login("abcdefghi@[127.0.0.2]", &r).is_err());
        assert!(may_create("abcdefghi@[127.0.0.1]", "123456789", &r).is_ok());
    }

    #[test]
    fn creation_table() {
        let r = rules();
        let table: &[(&str, &str, bool)] = &[
            ("abcdefghi@example.org", "123456789", true),
            ("abcdefghi@example.org", "12345678", false), // password too short
            ("abcdefgh@example.org", "123456789", false), // local part 8 < 9
            ("abcdefghij@example.org", "123456789", false), // 10 > 9
            ("abc.e_g-i@example.org", "123456789", true),
            ("abcd[fghi@example.org", "123456789", false), // bracket in local part
            ("abcd@fghi@example.org", "123456789", false), // two @
        ];
        for (addr, pw, ok) in table {
            assert_eq!(may_create(addr, pw, &r).is_ok(), *ok, "{addr} {pw}");
        }
    }
}
