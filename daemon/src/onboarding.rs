//! Onboarding: random credentials for `/new` (NEW-2), the `dclogin:` URL (NEW-3,
//! spec/client.md §2), the `DCACCOUNT:<domain>` invite (upstream 1.12), the links of
//! the admin's sign-up invites (issue 18) and the dev-mode banner with a terminal QR code.

use std::fmt::Write as _;
use std::net::SocketAddr;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use rand::Rng;

use crate::config::{Config, Mode};

/// Characters left as they are in a password: RFC 3986 unreserved, as Python's
/// `urllib.parse.quote(pw, safe="")` (what upstream uses) leaves them.
const PASSWORD_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The address additionally keeps `@[]` so `user@[1.2.3.4]` stays readable (NEW-3).
const EMAIL_ENCODE: &AsciiSet = &PASSWORD_ENCODE.remove(b'@').remove(b'[').remove(b']');

/// NEW-2: local parts are lower-case letters and digits.
const LOCAL_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// NEW-2: passwords use ASCII letters, digits and punctuation (Python's
/// `string.ascii_letters + string.digits + string.punctuation`).
const PASSWORD_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\
0123456789!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// Standard implicit-TLS ports Delta Chat tries without being told.
const IMAPS_PORT: u16 = 993;
const SUBMISSIONS_PORT: u16 = 465;

/// `n` characters of `alphabet` from the thread-local CSPRNG (ChaCha, seeded from the OS).
fn pick(alphabet: &[u8], n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())]))
        .collect()
}

/// NEW-2: a fresh address (`username_max_length` characters of `[a-z0-9]` at the
/// address domain) and password (`password_min_length + 3` characters), both from the
/// thread-local CSPRNG (ChaCha, seeded from the OS). Nothing is stored. Issue 18: never
/// a password that `signup = no-automatic` would take for automatic relay selection's
/// (23 letters and digits, [`crate::signup::looks_automatic`]; only possible with
/// `password_min_length = 20`, and then drawn again).
pub fn random_credentials(config: &Config) -> (String, String) {
    let local = pick(LOCAL_ALPHABET, config.username_max_length);
    let password = loop {
        let pw = pick(PASSWORD_ALPHABET, config.password_min_length + 3);
        if !crate::signup::looks_automatic(&pw) {
            break pw;
        }
    };
    (format!("{local}@{}", config.address_domain()), password)
}

/// Issue 18: credentials for an account made with the invite `token`: a fresh address
/// as [`random_credentials`] and a password that carries the token
/// ([`crate::signup::invite_password`]) followed by a secret of `password_min_length + 3`
/// characters. The account's first login uses one use of the invite.
pub fn invite_credentials(config: &Config, token: &str) -> (String, String) {
    let (email, _) = random_credentials(config);
    let secret = pick(PASSWORD_ALPHABET, config.password_min_length + 3);
    (email, crate::signup::invite_password(token, &secret))
}

/// Issue 18: the link of an invite. Relays with a trusted certificate:
/// `DCACCOUNT:https://<domain>/new?invite=TOKEN` — Delta Chat POSTs to the URL as it is
/// (core `login_param_from_account_qr`), and `/new` answers with
/// [`invite_credentials`]; one code serves every use. Self-signed relays (Delta Chat
/// checks a `DCACCOUNT:` URL's certificate strictly): a `dclogin:` link with fresh
/// [`invite_credentials`] — one account per link, so the status page makes a new one
/// each time it is shown.
pub fn invite_link(config: &Config, token: &str) -> String {
    if config.self_signed() {
        let (email, password) = invite_credentials(config, token);
        dclogin_url(config, &email, &password)
    } else {
        format!(
            "DCACCOUNT:https://{}/new?invite={token}",
            config.mail_domain
        )
    }
}

fn first_port(list: &[SocketAddr], default: u16) -> u16 {
    list.first().map_or(default, |a| a.port())
}

/// NEW-3: `dclogin:<email>?p=<pw>&v=1[&ih=<ip>&sh=<ip>][&ip=…&is=ssl&sp=…&ss=ssl][&ic=3]`.
///
/// The address is percent-encoded except `@[]`, the password fully (unreserved
/// characters stay, as upstream's `quote`). `ih`/`sh` are given only in IP-only mode;
/// explicit ports only when the implicit-TLS listeners are not on 993/465 (dev mode);
/// `ic=3` (accept invalid certificates) only for self-signed certificates.
pub fn dclogin_url(config: &Config, email: &str, password: &str) -> String {
    let mut url = format!(
        "dclogin:{}?p={}&v=1",
        utf8_percent_encode(email, EMAIL_ENCODE),
        utf8_percent_encode(password, PASSWORD_ENCODE)
    );
    if let Mode::IpOnly(ip) = &config.mode {
        let _ = write!(url, "&ih={ip}&sh={ip}");
    }
    // spec/client.md §2: `ip`/`is` and `sp`/`ss` set the IMAP and SMTP port and security.
    let imaps = first_port(&config.listen.imaps, IMAPS_PORT);
    let submissions = first_port(&config.listen.submissions, SUBMISSIONS_PORT);
    if imaps != IMAPS_PORT || submissions != SUBMISSIONS_PORT {
        let _ = write!(url, "&ip={imaps}&is=ssl&sp={submissions}&ss=ssl");
    }
    if config.self_signed() {
        url.push_str("&ic=3");
    }
    url
}

/// Delta Chat core (2.6x, `login_param_from_account_qr`): for `DCACCOUNT:<domain>` the
/// client invents the address `<9 letters/digits>@<domain>` (it lower-cases it) and a
/// 50-character password of letters and digits, asks the relay nothing and logs in;
/// the account is created at that first login (ACC-5).
pub const CLIENT_INVENTED_LOCAL_LEN: usize = 9;
/// See [`CLIENT_INVENTED_LOCAL_LEN`].
pub const CLIENT_INVENTED_PASSWORD_LEN: usize = 50;

/// Upstream 1.12: `DCACCOUNT:<domain>`, the invite that needs no HTTP request — for
/// domain relays only (the client checks the certificate strictly and the address
/// domain is the host it connects to), and only where the relay's name rules accept
/// the credentials the client invents (`username_min_length` ≤ 9 ≤
/// `username_max_length`, `password_min_length` ≤ 50); `None` otherwise.
pub fn dcaccount_domain_url(config: &Config) -> Option<String> {
    let accepted = config.username_min_length <= CLIENT_INVENTED_LOCAL_LEN
        && CLIENT_INVENTED_LOCAL_LEN <= config.username_max_length
        && config.password_min_length <= CLIENT_INVENTED_PASSWORD_LEN;
    (matches!(config.mode, Mode::Domain) && !config.self_signed() && accepted)
        .then(|| format!("DCACCOUNT:{}", config.mail_domain))
}

/// The QR code of `text` for a terminal (two modules per character row, light modules
/// drawn as blocks so it scans on dark backgrounds), or `None` if the text does not fit
/// in a QR code.
pub fn terminal_qr(text: &str) -> Option<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
    )
}

/// The dev banner text: data directory, ports and a fresh `dclogin:` link with its QR.
pub fn dev_banner(config: &Config) -> String {
    let (email, password) = random_credentials(config);
    let url = dclogin_url(config, &email, &password);
    let mut out = String::new();
    let _ = writeln!(out, "Relaybox dev relay for {}", config.address_domain());
    let _ = writeln!(out, "  data dir:    {}", config.data_dir.display());
    let l = &config.listen;
    for (name, list) in [
        ("smtp", &l.smtp),
        ("submission", &l.submission),
        ("submissions", &l.submissions),
        ("imap", &l.imap),
        ("imaps", &l.imaps),
        ("https", &l.https),
        ("http", &l.http),
    ] {
        let addrs: Vec<String> = list.iter().map(|a| a.to_string()).collect();
        let shown = if addrs.is_empty() {
            "off".to_string()
        } else {
            addrs.join(", ")
        };
        let _ = writeln!(out, "  {:<12} {shown}", format!("{name}:"));
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Scan the QR code with Delta Chat or open this link where Delta Chat runs;"
    );
    let _ = writeln!(out, "the account is created at its first login:");
    let _ = writeln!(out, "  {url}");
    if let Some(qr) = terminal_qr(&url) {
        let _ = writeln!(out);
        out.push_str(&qr);
        out.push('\n');
    }
    out
}

/// Print how to connect a Delta Chat app to a dev relay.
pub fn print_dev_banner(config: &Config) {
    print!("{}", dev_banner(config));
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn domain_config(text: &str) -> Config {
        Config::parse(&format!("[params]\n{text}\n"))
            .expect("test config")
            .config
    }

    #[test]
    fn dclogin_url_table() {
        let ip = domain_config("mail_domain = 192.0.2.1");
        let under = domain_config("mail_domain = _relay.test");
        let dom = domain_config("mail_domain = chat.example.org");
        let dev = Config::dev(PathBuf::from("/tmp/x"));
        for (config, email, pw, want) in [
            (
                &ip,
                "abc123def@[192.0.2.1]",
                "Pass,word!",
                "dclogin:abc123def@[192.0.2.1]?p=Pass%2Cword%21&v=1&ih=192.0.2.1&sh=192.0.2.1&ic=3",
            ),
            (
                &under,
                "abc123def@_relay.test",
                "a-b.c_d~e",
                "dclogin:abc123def@_relay.test?p=a-b.c_d~e&v=1&ic=3",
            ),
            (
                &under,
                "a+b c@_relay.test",
                "%&=?#/ :@[]\"'`",
                "dclogin:a%2Bb%20c@_relay.test?p=%25%26%3D%3F%23%2F%20%3A%40%5B%5D%22%27%60&v=1&ic=3",
            ),
            (
                &under,
                "x@_relay.test",
                "äö",
                "dclogin:x@_relay.test?p=%C3%A4%C3%B6&v=1&ic=3",
            ),
            (
                &dom,
                "abc@chat.example.org",
                "pw",
                "dclogin:abc@chat.example.org?p=pw&v=1",
            ),
            (
                &dev,
                "abc@[127.0.0.1]",
                "{pw}",
                "dclogin:abc@[127.0.0.1]?p=%7Bpw%7D&v=1&ih=127.0.0.1&sh=127.0.0.1\
                 &ip=1993&is=ssl&sp=1465&ss=ssl&ic=3",
            ),
        ] {
            assert_eq!(dclogin_url(config, email, pw), want);
        }
    }

    #[test]
    fn dclogin_url_round_trips_every_password_character() {
        let c = domain_config("mail_domain = 10.0.0.1");
        let pw = std::str::from_utf8(PASSWORD_ALPHABET).expect("ascii");
        let url = dclogin_url(&c, "u@[10.0.0.1]", pw);
        let p = url
            .split_once("?p=")
            .and_then(|(_, rest)| rest.split_once('&'))
            .map(|(p, _)| p)
            .expect("p parameter");
        // Nothing that could split the query survives unencoded.
        assert!(!p.contains(['&', '=', '?', '#', '+', ' ']), "{p}");
        let decoded = percent_encoding::percent_decode_str(p)
            .decode_utf8()
            .expect("utf-8");
        assert_eq!(decoded, pw);
    }

    #[test]
    fn credentials_follow_new_2() {
        for (text, local_len, pw_len, domain) in [
            ("mail_domain = chat.example.org", 9, 12, "@chat.example.org"),
            ("mail_domain = 192.0.2.1", 9, 12, "@[192.0.2.1]"),
            (
                "mail_domain = _x.test\nusername_min_length = 5\nusername_max_length = 20\npassword_min_length = 30",
                20,
                33,
                "@_x.test",
            ),
        ] {
            let c = domain_config(text);
            let mut seen_pw = std::collections::HashSet::new();
            for _ in 0..200 {
                let (email, pw) = random_credentials(&c);
                let local = email.strip_suffix(domain).expect("domain");
                assert_eq!(local.len(), local_len, "{email}");
                assert!(
                    local.bytes().all(|b| LOCAL_ALPHABET.contains(&b)),
                    "{email}"
                );
                assert_eq!(pw.len(), pw_len, "{pw}");
                assert!(
                    pw.bytes()
                        .all(|b| b.is_ascii_graphic() && PASSWORD_ALPHABET.contains(&b)),
                    "{pw}"
                );
                seen_pw.insert(pw);
            }
            assert_eq!(seen_pw.len(), 200, "passwords repeat");
        }
        assert_eq!(PASSWORD_ALPHABET.len(), 26 + 26 + 10 + 32);
        assert_eq!(LOCAL_ALPHABET.len(), 36);
    }

    #[test]
    fn credentials_use_the_whole_alphabet() {
        let c = domain_config("mail_domain = chat.example.org");
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2000 {
            let (_, pw) = random_credentials(&c);
            seen.extend(pw.bytes());
        }
        // 24000 draws from 94 symbols: every one appears (miss chance ≈ 1e-109).
        assert_eq!(seen.len(), PASSWORD_ALPHABET.len());
    }

    /// Issue 18: the invite's token rides in `/new`'s URL or in the `dclogin:` password.
    #[test]
    fn invite_links_carry_the_token() {
        let token = crate::signup::new_token();
        let dom = domain_config("mail_domain = chat.example.org");
        assert_eq!(
            invite_link(&dom, &token),
            format!("DCACCOUNT:https://chat.example.org/new?invite={token}")
        );
        let ip = domain_config("mail_domain = 192.0.2.1");
        let a = invite_link(&ip, &token);
        let b = invite_link(&ip, &token);
        assert_ne!(a, b, "one account per dclogin: link");
        let p = a
            .split_once("?p=")
            .and_then(|(_, rest)| rest.split_once('&'))
            .map(|(p, _)| p)
            .expect("p parameter");
        let pw = percent_encoding::percent_decode_str(p)
            .decode_utf8()
            .unwrap()
            .into_owned();
        assert_eq!(crate::signup::password_token(&pw), Some(token.as_str()));
        let (_, pw1) = invite_credentials(&dom, &token);
        let (_, pw2) = invite_credentials(&dom, &token);
        assert_ne!(pw1, pw2, "accounts of one invite do not share a password");
        assert!(pw1.len() >= dom.password_min_length);
    }

    /// Issue 18: with `password_min_length = 20` `/new` would make 23-character
    /// passwords; none of them may look like automatic relay selection's.
    #[test]
    fn new_passwords_never_look_automatic() {
        let c = domain_config("mail_domain = chat.example.org\npassword_min_length = 20");
        // Without the redraw about 7 in 100 000 are letters and digits only (62 of 94
        // symbols, 23 times): this many draws meet one but once in a thousand runs.
        for _ in 0..100_000 {
            let (_, pw) = random_credentials(&c);
            assert_eq!(pw.len(), 23);
            assert!(!crate::signup::looks_automatic(&pw), "{pw}");
        }
    }

    #[test]
    fn dcaccount_domain_only_where_the_invented_credentials_pass() {
        let url = |text: &str| dcaccount_domain_url(&domain_config(text));
        assert_eq!(
            url("mail_domain = chat.example.org").as_deref(),
            Some("DCACCOUNT:chat.example.org")
        );
        assert_eq!(
            url("mail_domain = chat.example.org\nusername_max_length = 20").as_deref(),
            Some("DCACCOUNT:chat.example.org")
        );
        assert_eq!(
            url("mail_domain = chat.example.org\npassword_min_length = 50").as_deref(),
            Some("DCACCOUNT:chat.example.org")
        );
        // Self-signed and IP-only relays: the client would refuse the certificate or
        // make an address the relay does not have.
        assert_eq!(url("mail_domain = 192.0.2.1"), None);
        assert_eq!(url("mail_domain = _relay.test"), None);
        assert_eq!(
            dcaccount_domain_url(&Config::dev(PathBuf::from("/tmp/x"))),
            None
        );
        // Name rules that refuse a 9-character address or a 50-character password.
        assert_eq!(
            url(
                "mail_domain = chat.example.org\nusername_min_length = 10\nusername_max_length = 12"
            ),
            None
        );
        assert_eq!(
            url("mail_domain = chat.example.org\npassword_min_length = 51"),
            None
        );
    }

    #[test]
    fn dev_banner_shows_dir_ports_link_and_qr() {
        let c = Config::dev(PathBuf::from("/tmp/rb-banner"));
        let text = dev_banner(&c);
        assert!(text.contains("/tmp/rb-banner"), "{text}");
        for port in ["2525", "1587", "1465", "1143", "1993", "1443", "1080"] {
            assert!(text.contains(&format!("127.0.0.1:{port}")), "{port}");
        }
        let link = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("dclogin:"))
            .expect("link line");
        assert!(link.contains("@[127.0.0.1]?p="), "{link}");
        assert!(
            link.ends_with("&ip=1993&is=ssl&sp=1465&ss=ssl&ic=3"),
            "{link}"
        );
        // The QR block uses the half-block characters.
        assert!(text.contains('█') || text.contains('▀') || text.contains('▄'));
        // Two banners carry two different accounts.
        assert_ne!(dev_banner(&c), text);
    }
}
