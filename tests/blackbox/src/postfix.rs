//! A private Postfix instance as the classic mail server peer of the federation tests
//! (issue 3, spec/peers.md §4.2): Debian's Postfix with its own config directory, queue
//! and data directories under a temp dir, started with `postfix -c DIR start-fg` as a
//! child process (peers.md: plain `start` exits silently there), listening on its own
//! loopback address port 25 with STARTTLS (a test-CA certificate), accepting mail for
//! its domain into one Maildir the test reads, and sending to relays through
//! `transport_maps` straight to their addresses (`smtp:[ip]:25`; Postfix cannot use the
//! test's dnsmasq on a non-53 port) with `smtp_tls_security_level = encrypt`.
//! Stopped with `postfix -c DIR stop`, and killed on drop.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::ca::LeafFiles;

pub const POSTFIX: &str = "/usr/sbin/postfix";
/// How long Postfix may take to greet on port 25 after start.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running private Postfix. Dropping it stops it.
pub struct Postfix {
    dir: TempDir,
    pub ip: Ipv4Addr,
    pub domain: String,
    child: Option<Child>,
}

/// uid and gid of a system user, from /etc/passwd.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() > 3 && f[0] == name {
            Some((f[2].parse().ok()?, f[3].parse().ok()?))
        } else {
            None
        }
    })
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

impl Postfix {
    /// Start Postfix at `ip` for `domain` with `cert` for STARTTLS; mail for
    /// `routes[i].0` goes to `smtp:[routes[i].1]:25` with TLS required.
    pub fn start(
        ip: Ipv4Addr,
        domain: &str,
        cert: &LeafFiles,
        routes: &[(String, Ipv4Addr)],
    ) -> Postfix {
        let (uid, gid) = user_ids("postfix").expect("user postfix (Debian package postfix)");
        let dir = tempfile::Builder::new()
            .prefix("relaybox-postfix-")
            .tempdir()
            .expect("create temp dir");
        // The postfix user must reach its queue and the mailbox below the temp dir.
        chmod(dir.path(), 0o755);
        let conf = dir.path().join("conf");
        let queue = dir.path().join("queue");
        let data = dir.path().join("data");
        let mail = dir.path().join("mail");
        for d in [&conf, &queue, &data, &mail] {
            std::fs::create_dir_all(d).expect("create Postfix directory");
            chmod(d, 0o755);
        }
        chown(&data, uid, gid);
        chown(&mail, uid, gid);
        // Key readable when smtpd opens it (test-only key).
        let tls_cert = conf.join("tls.crt");
        let tls_key = conf.join("tls.key");
        std::fs::copy(&cert.cert, &tls_cert).expect("copy certificate");
        std::fs::copy(&cert.key, &tls_key).expect("copy key");
        chmod(&tls_cert, 0o644);
        chmod(&tls_key, 0o644);

        let transport: Vec<String> = routes
            .iter()
            .map(|(d, a)| format!("{d}=smtp:[{a}]:25"))
            .collect();
        let main_cf = format!(
            "# written by tests/blackbox/src/postfix.rs
compatibility_level = 3.6
config_directory = {conf}
queue_directory = {queue}
data_directory = {data}
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
maillog_file = /dev/stdout
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = {domain}
mydomain = {domain}
myorigin = {domain}
mydestination =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_peername_lookup = no
alias_maps =
alias_database =
local_recipient_maps =
biff = no
append_dot_mydomain = no
virtual_mailbox_domains = {domain}
virtual_mailbox_base = {mail}
virtual_mailbox_maps = static:inbox/
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_transport = virtual
transport_maps = inline:{{ {transport} }}
smtpd_tls_cert_file = {tls_cert}
smtpd_tls_key_file = {tls_key}
smtpd_tls_security_level = may
smtpd_tls_loglevel = 1
smtpd_tls_received_header = yes
smtp_tls_security_level = encrypt
smtp_tls_loglevel = 1
smtp_bind_address = {ip}
smtp_dns_support_level = disabled
smtp_host_lookup = native
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
delay_warning_time = 0
",
            conf = conf.display(),
            queue = queue.display(),
            data = data.display(),
            mail = mail.display(),
            tls_cert = tls_cert.display(),
            tls_key = tls_key.display(),
            transport = transport.join(", "),
        );
        std::fs::write(conf.join("main.cf"), main_cf).expect("write main.cf");
        // Every service unchrooted (the temp dir is no chroot jail). Postfix refuses an
        // `inet_interfaces` address that no interface carries (127.a.b.4 is only routed
        // to lo), so main.cf names 127.0.0.1 and the smtpd listener names its address
        // here, which master binds without that check.
        let master_cf = format!(
            "{ip}:25 inet n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"
        );
        std::fs::write(conf.join("master.cf"), master_cf).expect("write master.cf");

        let mut pf = Postfix {
            dir,
            ip,
            domain: domain.to_string(),
            child: None,
        };
        let log = File::create(pf.log_path()).expect("create Postfix log");
        let child = Command::new(POSTFIX)
            .arg("-c")
            .arg(&conf)
            .arg("start-fg")
            .env("MAIL_CONFIG", &conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {POSTFIX}: {e}"));
        pf.child = Some(child);
        pf.wait_ready();
        pf
    }

    fn conf_dir(&self) -> PathBuf {
        self.dir.path().join("conf")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postfix.log")
    }

    /// Postfix's log (maillog_file = /dev/stdout of the master).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn smtp_addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip), 25)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "postfix exited with {status} during start; log:\n{}",
                    self.log()
                );
            }
            if let Ok(mut s) =
                std::net::TcpStream::connect_timeout(&self.smtp_addr(), Duration::from_millis(500))
            {
                use std::io::Read;
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = [0u8; 256];
                if let Ok(n) = s.read(&mut buf)
                    && buf[..n].starts_with(b"220")
                {
                    return;
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "postfix did not greet on {} within {START_TIMEOUT:?}; log:\n{}",
                    self.smtp_addr(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The messages delivered to the domain's mailbox (Maildir `new/` and `cur/`),
    /// oldest first by file name.
    pub fn mailbox(&self) -> Vec<Vec<u8>> {
        let base = self.dir.path().join("mail").join("inbox");
        let mut files: Vec<PathBuf> = ["new", "cur"]
            .iter()
            .filter_map(|d| std::fs::read_dir(base.join(d)).ok())
            .flat_map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())))
            .collect();
        files.sort();
        files.iter().filter_map(|f| std::fs::read(f).ok()).collect()
    }

    /// Poll the mailbox (every 250 ms, up to `within`) until `done` holds; returns the
    /// last contents either way.
    pub async fn wait_mailbox(
        &self,
        within: Duration,
        done: impl Fn(&[Vec<u8>]) -> bool,
    ) -> Vec<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let m = self.mailbox();
            if done(&m) || tokio::time::Instant::now() >= deadline {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Poll the log until a line satisfies `pred`; that line, or `None` at the deadline.
    pub async fn wait_log(&self, within: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(l) = self.log().lines().find(|l| pred(l)) {
                return Some(l.to_string());
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Serve `cert` from now on (`postfix reload` restarts the smtpd processes).
    pub fn replace_certificate(&self, cert: &LeafFiles) {
        let conf = self.conf_dir();
        std::fs::copy(&cert.cert, conf.join("tls.crt")).expect("copy certificate");
        std::fs::copy(&cert.key, conf.join("tls.key")).expect("copy key");
        let out = Command::new(POSTFIX)
            .arg("-c")
            .arg(&conf)
            .arg("reload")
            .env("MAIL_CONFIG", &conf)
            .stdin(Stdio::null())
            .output()
            .expect("run postfix reload");
        assert!(
            out.status.success(),
            "postfix reload: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `postfix -c DIR stop`, then make sure the master is gone.
    pub fn stop(&mut self) {
        if self.child.is_none() {
            return;
        }
        let _ = Command::new(POSTFIX)
            .arg("-c")
            .arg(self.conf_dir())
            .arg("stop")
            .env("MAIL_CONFIG", self.conf_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            eprintln!(
                "---- postfix log (last {} lines) ----\n{}\n----",
                tail.len(),
                tail.join("\n")
            );
        }
    }
}
