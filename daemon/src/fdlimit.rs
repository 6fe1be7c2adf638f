//! The open-file limit (issue 13): every connection is a file descriptor, and with the
//! usual soft limit of 1024 a thousand idle sessions would make every listener fail with
//! EMFILE. At start the daemon raises its soft `RLIMIT_NOFILE` to the hard limit
//! ([`raise`]); the listeners' connection caps must then leave room for the store, the
//! listeners, outgoing connections and TURN ([`fit_caps`]), else they are lowered with
//! one warning.

use crate::config::Config;

/// Descriptors kept for everything that is not a client connection: stdio, the store,
/// the runtime (epoll, eventfds, signals), DNS sockets of sessions, ACME, push, update
/// downloads, metrics scrapes, appliance devices (LED, button, watchdog, mDNS).
const BASE_RESERVE: u64 = 256;
/// Outbound deliveries at once (`crate::outbound`), each a socket plus a DNS socket.
const OUTBOUND_RESERVE: u64 = 2 * 64;

/// What happened to the limit at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoFile {
    pub before: u64,
    pub soft: u64,
    pub hard: u64,
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit (bounded by the kernel's
/// `fs.nr_open`), and log the outcome once.
pub fn raise() -> Option<NoFile> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (before, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("open files: cannot read the limit: {e}");
            return None;
        }
    };
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1 << 20);
    let target = hard.min(nr_open);
    let mut soft = before;
    if target > before {
        match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
            Ok(()) => soft = target,
            Err(e) => tracing::warn!("open files: cannot raise the soft limit to {target}: {e}"),
        }
    }
    if soft > before {
        tracing::info!("open files: soft limit raised from {before} to {soft} (hard limit {hard})");
    } else {
        tracing::info!("open files: limit {soft} (hard limit {hard})");
    }
    Some(NoFile { before, soft, hard })
}

/// The soft `RLIMIT_NOFILE` now (`u64::MAX` when it cannot be read).
pub fn soft_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(u64::MAX)
}

/// The connection caps of the listener pools (`crate::server::serve`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// 143, 993 and IMAP via 443 together.
    pub imap: usize,
    /// Each SMTP pool: 25, 587, 465, submission via 443.
    pub smtp: usize,
    /// 443.
    pub https: usize,
    /// 80.
    pub http: usize,
}

/// The configured caps, lowered to fit `nofile` descriptors if needed (one warning).
pub fn fit_caps(config: &Config, nofile: u64) -> Caps {
    let l = &config.listen;
    let caps = Caps {
        imap: config.max_imap_connections,
        smtp: config.max_smtp_connections,
        https: crate::admission::WEB_CONNECTIONS,
        http: crate::admission::WEB_CONNECTIONS,
    };
    let smtp_pools = [&l.smtp, &l.submission, &l.submissions, &l.https]
        .iter()
        .filter(|a| !a.is_empty())
        .count();
    let imap_pool = !(l.imap.is_empty() && l.imaps.is_empty() && l.https.is_empty());
    let listeners = [
        &l.smtp,
        &l.submission,
        &l.submissions,
        &l.imap,
        &l.imaps,
        &l.https,
        &l.http,
    ]
    .iter()
    .map(|a| a.len())
    .sum::<usize>();
    let turn = if config.turn_listen.is_empty() {
        0
    } else {
        crate::turn::MAX_RELAYED_SOCKETS + config.turn_listen.len()
    };
    let reserve = BASE_RESERVE
        + OUTBOUND_RESERVE
        + crate::admission::MAX_REFUSING as u64
        + listeners as u64
        + turn as u64;
    let pools = Pools {
        smtp: smtp_pools,
        imap: imap_pool,
        https: !l.https.is_empty(),
        http: !l.http.is_empty(),
    };
    let fitted = fit(caps, pools, nofile.saturating_sub(reserve));
    if fitted != caps {
        tracing::warn!(
            "open files: the limit {nofile} is too low for the connection caps ({} \
             descriptors kept for the store, listeners, outgoing connections{}): lowered \
             max_imap_connections {} → {}, max_smtp_connections {} → {}, HTTPS and HTTP \
             {} → {} / {}; raise the limit (ulimit -n) to serve more",
            reserve,
            if turn > 0 { " and TURN" } else { "" },
            caps.imap,
            fitted.imap,
            caps.smtp,
            fitted.smtp,
            caps.https,
            fitted.https,
            fitted.http
        );
    }
    fitted
}

/// Which pools exist (a pool without listeners needs no descriptors).
#[derive(Debug, Clone, Copy)]
struct Pools {
    smtp: usize,
    imap: bool,
    https: bool,
    http: bool,
}

/// Scale `caps` down in proportion so that the pools that exist fit `room`
/// descriptors; each cap stays at least 1.
fn fit(caps: Caps, pools: Pools, room: u64) -> Caps {
    let n = |on: bool, cap: usize| if on { cap as u64 } else { 0 };
    let need = n(pools.imap, caps.imap)
        + pools.smtp as u64 * caps.smtp as u64
        + n(pools.https, caps.https)
        + n(pools.http, caps.http);
    if need <= room {
        return caps;
    }
    let scale = |cap: usize| ((cap as u128 * u128::from(room)) / u128::from(need)).max(1) as usize;
    Caps {
        imap: scale(caps.imap),
        smtp: scale(caps.smtp),
        https: scale(caps.https),
        http: scale(caps.http),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPS: Caps = Caps {
        imap: 10_000,
        smtp: 1_000,
        https: 1_000,
        http: 1_000,
    };
    const ALL: Pools = Pools {
        smtp: 4,
        imap: true,
        https: true,
        http: true,
    };

    #[test]
    fn caps_that_fit_are_kept() {
        assert_eq!(fit(CAPS, ALL, 16_000), CAPS);
        assert_eq!(fit(CAPS, ALL, 1 << 20), CAPS);
        // Pools without listeners need nothing.
        let imap_only = Pools {
            smtp: 0,
            imap: true,
            https: false,
            http: false,
        };
        assert_eq!(fit(CAPS, imap_only, 10_000), CAPS);
    }

    #[test]
    fn caps_are_lowered_in_proportion() {
        let c = fit(CAPS, ALL, 1_600);
        assert_eq!(
            c,
            Caps {
                imap: 1_000,
                smtp: 100,
                https: 100,
                http: 100,
            }
        );
        let total = c.imap + 4 * c.smtp + c.https + c.http;
        assert!(total <= 1_600);
        // Never below one.
        let c = fit(CAPS, ALL, 0);
        assert_eq!((c.imap, c.smtp, c.https, c.http), (1, 1, 1, 1));
    }

    #[test]
    fn the_default_config_needs_a_raised_limit() {
        let config = crate::config::Config::parse("[params]\nmail_domain = example.org\n")
            .unwrap()
            .config;
        // The usual 1024 leaves room for a few hundred connections in all.
        let low = fit_caps(&config, 1024);
        assert!(low.imap < 1024 && low.imap >= 1, "{low:?}");
        let sum = low.imap + 4 * low.smtp + low.https + low.http;
        assert!(sum < 1024, "{low:?}");
        // 65536 (the image's init) keeps the defaults, TURN included.
        assert_eq!(
            fit_caps(&config, 65_536),
            Caps {
                imap: 10_000,
                smtp: 1_000,
                https: 1_000,
                http: 1_000,
            }
        );
    }

    #[test]
    fn raise_reaches_the_hard_limit() {
        // The test process may raise its own soft limit: afterwards soft == min(hard,
        // nr_open), and calling it again changes nothing.
        let first = raise().expect("getrlimit works on Linux");
        assert!(first.soft >= first.before);
        assert_eq!(soft_limit(), first.soft);
        let again = raise().unwrap();
        assert_eq!(again.before, first.soft);
        assert_eq!(again.soft, first.soft);
    }
}
