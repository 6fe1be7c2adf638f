//! What every page shares: the layout fields of `templates/base.html`, the view of one
//! check (WIZ-1, WIZ-2) and small formatting helpers (dates, sizes). Values from the
//! backend are rendered through askama, which escapes them (WIZ-3).

use crate::{CertificateInfo, Check, CheckStatus};

/// Fields of `base.html` (title, meta refresh, navigation, CSRF token of the logout form).
#[derive(Debug, Clone, Default)]
pub struct Layout {
    pub title: String,
    /// `content` of `<meta http-equiv="refresh">` (`"2"` or `"3;url=/admin/…"`).
    pub refresh: Option<String>,
    pub logged_in: bool,
    /// CSRF token for the forms of the page (logout included).
    pub csrf: String,
    pub version: String,
    /// Wizard step shown as current in the step list (1 domain … 5 done; 0: none).
    pub step: u8,
}

/// One check as rendered: `data-check-id`, `data-status`, a label and the texts.
#[derive(Debug, Clone)]
pub struct CheckView {
    pub id: String,
    pub status: &'static str,
    pub label: &'static str,
    pub summary: String,
    pub details: Option<String>,
    pub expected: Option<String>,
    pub found: Option<String>,
}

/// Label of a status. WIZ-2: `unknown` reads "could not check", never "wrong".
pub fn status_label(s: CheckStatus) -> &'static str {
    match s {
        CheckStatus::Ok => "ok",
        CheckStatus::Warning => "needs attention",
        CheckStatus::Error => "wrong",
        CheckStatus::Unknown => "could not check",
    }
}

/// Label of a service's health on the status page.
pub fn service_label(s: CheckStatus) -> &'static str {
    match s {
        CheckStatus::Ok => "running",
        CheckStatus::Warning => "degraded",
        CheckStatus::Error => "not working",
        CheckStatus::Unknown => "could not check",
    }
}

impl From<&Check> for CheckView {
    fn from(c: &Check) -> Self {
        CheckView {
            id: c.id.clone(),
            status: c.status.as_str(),
            label: status_label(c.status),
            summary: c.summary.clone(),
            details: c.details.clone().filter(|s| !s.is_empty()),
            expected: c.expected.clone().filter(|s| !s.is_empty()),
            found: c.found.clone().filter(|s| !s.is_empty()),
        }
    }
}

/// Views of a list of checks.
pub fn checks(list: &[Check]) -> Vec<CheckView> {
    list.iter().map(CheckView::from).collect()
}

/// A check that could not be made at all (e.g. the checks timed out). WIZ-2: unknown.
pub fn could_not_check(id: &str, summary: &str) -> CheckView {
    CheckView {
        id: id.to_string(),
        status: CheckStatus::Unknown.as_str(),
        label: status_label(CheckStatus::Unknown),
        summary: summary.to_string(),
        details: None,
        expected: None,
        found: None,
    }
}

/// The certificate in words (issue 16): who issued it, or that it is self-signed, and
/// where it came from — never the bare source name ("acme").
pub fn certificate_label(c: &CertificateInfo) -> String {
    let from = match c.source.as_str() {
        "none" => return "none yet".into(),
        "acme" => ", obtained automatically and renewed before it expires",
        "external" => ", from the certificate files named in chatmail.ini",
        _ => "",
    };
    if c.self_signed || (c.source == "self-signed" && c.issuer.is_empty()) {
        let by = if c.source == "self-signed" {
            " by this relay"
        } else {
            ""
        };
        return format!("self-signed{by} (no certificate authority vouches for it){from}");
    }
    let issuer = if c.issuer.is_empty() {
        "an unknown certificate authority"
    } else {
        &c.issuer
    };
    format!("issued by {issuer}{from}")
}

/// `YYYY-MM-DD` (UTC) of a Unix time (days-from-civil inverse, proleptic Gregorian).
pub fn date(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DD HH:MM UTC` of a Unix time.
pub fn date_time(unix: u64) -> String {
    let secs = unix % 86_400;
    format!(
        "{} {:02}:{:02} UTC",
        date(unix),
        secs / 3600,
        secs % 3600 / 60
    )
}

/// Whole days from `now` until `later` (negative when past).
pub fn days_left(later: u64, now: u64) -> i64 {
    (i128::from(later) - i128::from(now)).div_euclid(86_400) as i64
}

/// A byte count for people: `512 B`, `1.5 MB`, `3.2 GB` (powers of 1000).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = "B";
    for u in UNITS {
        if v < 1000.0 {
            break;
        }
        v /= 1000.0;
        unit = u;
    }
    if v < 10.0 {
        format!("{v:.1} {unit}")
    } else {
        format!("{v:.0} {unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_sizes() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(951_782_400), "2000-02-29");
        assert_eq!(date(1_798_675_200), "2026-12-31");
        assert!(date(u64::MAX).len() >= 10);
        assert_eq!(date_time(1_798_675_200 + 86_399), "2026-12-31 23:59 UTC");
        assert_eq!(date_time(0), "1970-01-01 00:00 UTC");
        assert_eq!(days_left(86_400 * 3 + 5, 0), 3);
        assert_eq!(days_left(0, 10), -1);
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1500), "1.5 kB");
        assert_eq!(bytes(25_000_000), "25 MB");
        assert!(bytes(u64::MAX).ends_with("EB"));
    }

    #[test]
    fn certificates_are_named_by_their_issuer() {
        let cert = |source: &str, issuer: &str, self_signed: bool| CertificateInfo {
            source: source.into(),
            issuer: issuer.into(),
            self_signed,
            names: Vec::new(),
            not_after: None,
            acme_possible: true,
            progress: crate::AcmeProgress::Idle,
        };
        let acme = certificate_label(&cert("acme", "Let's Encrypt (R11)", false));
        assert!(
            acme.starts_with("issued by Let's Encrypt (R11), obtained"),
            "{acme}"
        );
        assert!(!acme.contains("acme"), "{acme}");
        let own = certificate_label(&cert("self-signed", "relay.example", true));
        assert!(own.starts_with("self-signed by this relay"), "{own}");
        let ext = certificate_label(&cert("external", "Example CA", false));
        assert_eq!(
            ext,
            "issued by Example CA, from the certificate files named in chatmail.ini"
        );
        let ext_self = certificate_label(&cert("external", "x", true));
        assert!(ext_self.starts_with("self-signed (no"), "{ext_self}");
        assert_eq!(certificate_label(&cert("none", "", false)), "none yet");
    }

    #[test]
    fn unknown_is_never_wrong() {
        assert_eq!(status_label(CheckStatus::Unknown), "could not check");
    }
}
