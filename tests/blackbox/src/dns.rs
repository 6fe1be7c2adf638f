//! A private DNS server for the federation tests (issue 3): the real dnsmasq (Debian's
//! `dnsmasq-base`, installed by `tests/run`) on `127.0.0.1:<free port>`, serving only the
//! test zone from its own config file — A (`host-record`), MX (`mx-host`) and TXT
//! (`txt-record`) records, nothing forwarded, `/etc/hosts` ignored, every other name
//! under `.test` answered NXDOMAIN. The relays reach it through `dns_resolver`. The
//! process is killed when the [`Dns`] is dropped.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Where `tests/run` installs dnsmasq.
pub const DNSMASQ: &str = "/usr/sbin/dnsmasq";

/// How long dnsmasq may take to answer its first query.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts with a fresh port when the picked one was taken meanwhile.
const START_ATTEMPTS: usize = 5;

/// The records of the test zone.
#[derive(Debug, Clone, Default)]
pub struct Zone {
    /// (name, IPv4 address).
    pub a: Vec<(String, Ipv4Addr)>,
    /// (domain, MX host, preference).
    pub mx: Vec<(String, String, u16)>,
    /// (name, value); values longer than 255 bytes are split into several strings of
    /// one record (RFC 1035 §3.3.14 character-strings, §18 of the spec).
    pub txt: Vec<(String, String)>,
}

impl Zone {
    /// `<domain> A <ip>` and `<domain> MX 10 <domain>.` (spec/relay.md §18, required).
    pub fn add_mail_domain(&mut self, domain: &str, ip: Ipv4Addr) {
        self.a.push((domain.to_string(), ip));
        self.mx.push((domain.to_string(), domain.to_string(), 10));
    }

    pub fn add_txt(&mut self, name: &str, value: &str) {
        self.txt.push((name.to_string(), value.to_string()));
    }

    /// dnsmasq's config file for this zone on `port`.
    fn config(&self, port: u16) -> String {
        let mut c = String::new();
        c += &format!("port={port}\n");
        c += "listen-address=127.0.0.1\nbind-interfaces\nno-resolv\nno-hosts\n";
        // Nothing leaves the machine; unknown names of the test TLD are NXDOMAIN.
        c += "local=/test/\n";
        // Local data with TTL 0: a restarted server's new records apply at once.
        c += "local-ttl=0\n";
        c += "pid-file=\nuser=root\nlog-queries\nlog-facility=-\n";
        for (name, ip) in &self.a {
            c += &format!("host-record={name},{ip}\n");
        }
        for (domain, host, pref) in &self.mx {
            c += &format!("mx-host={domain},{host},{pref}\n");
        }
        for (name, value) in &self.txt {
            let chunks: Vec<String> = value
                .as_bytes()
                .chunks(255)
                .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
                .collect();
            c += &format!("txt-record={name},{}\n", chunks.join(","));
        }
        c
    }
}

/// A running dnsmasq. Dropping it kills the process.
pub struct Dns {
    dir: TempDir,
    pub port: u16,
    zone: Zone,
    child: Option<Child>,
    runs: u32,
}

impl Dns {
    /// Start dnsmasq serving `zone` on a free port of 127.0.0.1 and wait until it
    /// answers. Panics with its log if it does not.
    pub fn start(zone: Zone) -> Dns {
        let dir = tempfile::Builder::new()
            .prefix("relaybox-dns-")
            .tempdir()
            .expect("create temp dir");
        let mut dns = Dns {
            dir,
            port: 0,
            zone,
            child: None,
            runs: 0,
        };
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            dns.port = free_udp_port();
            match dns.spawn_and_wait() {
                Ok(()) => return dns,
                Err(e) => {
                    dns.kill();
                    last = e;
                }
            }
        }
        panic!("dnsmasq did not start after {START_ATTEMPTS} attempts: {last}");
    }

    /// The `dns_resolver` value for the relays' config.
    pub fn resolver(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The zone being served.
    pub fn zone(&self) -> &Zone {
        &self.zone
    }

    /// Serve `zone` from now on: dnsmasq rereads no records on SIGHUP, so it is
    /// restarted on the same port.
    pub fn replace_zone(&mut self, zone: Zone) {
        self.zone = zone;
        self.kill();
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(e) => {
                    self.kill();
                    last = e;
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        panic!("dnsmasq did not restart on port {}: {last}", self.port);
    }

    /// Add a TXT record (restarts dnsmasq).
    pub fn add_txt(&mut self, name: &str, value: &str) {
        let mut zone = self.zone.clone();
        zone.add_txt(name, value);
        self.replace_zone(zone);
    }

    fn log_path(&self, run: u32) -> PathBuf {
        self.dir.path().join(format!("dnsmasq-{run}.log"))
    }

    /// dnsmasq's log (queries included) over all runs.
    pub fn log(&self) -> String {
        (1..=self.runs)
            .filter_map(|r| std::fs::read_to_string(self.log_path(r)).ok())
            .collect::<Vec<_>>()
            .join("")
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let conf = self.dir.path().join("dnsmasq.conf");
        std::fs::write(&conf, self.zone.config(self.port))
            .map_err(|e| format!("write {}: {e}", conf.display()))?;
        self.runs += 1;
        let log = File::create(self.log_path(self.runs)).map_err(|e| e.to_string())?;
        let child = Command::new(DNSMASQ)
            .arg("--no-daemon")
            .arg(format!("--conf-file={}", conf.display()))
            .args(["--no-resolv", "--no-hosts", "--bind-interfaces"])
            .arg("--listen-address=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn {DNSMASQ}: {e}"))?;
        self.child = Some(child);
        let probe = self
            .zone
            .a
            .first()
            .map(|(n, _)| n.clone())
            .unwrap_or_else(|| "probe.test".to_string());
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!(
                    "dnsmasq exited with {status}; log:\n{}",
                    self.log()
                ));
            }
            if query(self.addr(), &probe, 1, Duration::from_millis(200)).is_some() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "dnsmasq did not answer on {} within {START_TIMEOUT:?}; log:\n{}",
                    self.addr(),
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!(
                "---- dnsmasq log (last {} lines) ----\n{}\n----",
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind a free UDP port");
    s.local_addr().expect("local addr").port()
}

/// One DNS query over UDP (RFC 1035 §4.1): `(rcode, answer count)` of the reply, or
/// `None` when nothing came back within `wait`. `qtype` 1 = A, 15 = MX, 16 = TXT.
pub fn query(server: SocketAddr, name: &str, qtype: u16, wait: Duration) -> Option<(u8, u16)> {
    let sock = UdpSocket::bind("127.0.0.1:0").ok()?;
    sock.set_read_timeout(Some(wait)).ok()?;
    let id: u16 = 0x5EED;
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD, QDCOUNT 1
    for label in name.trim_end_matches('.').split('.') {
        q.push(u8::try_from(label.len()).ok()?);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes()); // IN
    sock.send_to(&q, server).ok()?;
    let mut buf = [0u8; 1500];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    if n < 12 || buf[..2] != id.to_be_bytes() {
        return None;
    }
    Some((buf[3] & 0x0F, u16::from_be_bytes([buf[6], buf[7]])))
}

/// The value of the TXT record `<selector>._domainkey.<domain>` in zone-file text (the
/// output of `relaybox dns` or `<data_dir>/dns.zone`): the quoted strings of that record
/// joined, the record possibly spread over lines in parentheses (RFC 1035 §5.1).
pub fn dkim_txt_from_zone(zone_text: &str, selector: &str, domain: &str) -> Option<String> {
    let owner = format!("{selector}._domainkey.{domain}");
    let lines: Vec<&str> = zone_text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let first = line.split_whitespace().next().unwrap_or("");
        let first = first.trim_end_matches('.');
        let relative = format!("{selector}._domainkey");
        if !(first.eq_ignore_ascii_case(&owner) || first.eq_ignore_ascii_case(&relative)) {
            continue;
        }
        if !line.contains("TXT") {
            continue;
        }
        // Collect from the TXT keyword to the end of the record.
        let mut text = String::new();
        let start = line.find("TXT").map(|p| p + 3).unwrap_or(0);
        text += &line[start..];
        let mut depth = text.matches('(').count() as i32 - text.matches(')').count() as i32;
        let mut j = i + 1;
        while depth > 0 && j < lines.len() && j < i + 50 {
            text += " ";
            text += lines[j];
            depth += lines[j].matches('(').count() as i32 - lines[j].matches(')').count() as i32;
            j += 1;
        }
        let mut value = String::new();
        let mut in_quotes = false;
        let mut escaped = false;
        for ch in text.chars() {
            if in_quotes {
                if escaped {
                    value.push(ch);
                    escaped = false;
                } else if ch == '\\' {
                    escaped = true;
                } else if ch == '"' {
                    in_quotes = false;
                } else {
                    value.push(ch);
                }
            } else if ch == '"' {
                in_quotes = true;
            } else if ch == ';' {
                break; // a zone-file comment
            }
        }
        if !value.is_empty() {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dkim_txt_is_read_from_split_and_one_line_records() {
        let zone = "example.org. 3600 IN A 1.2.3.4\n\
                    opendkim._domainkey.example.org. 3600 IN TXT ( \"v=DKIM1;k=rsa;\"\n  \"p=AAAA;s=email;t=s\" )\n";
        assert_eq!(
            dkim_txt_from_zone(zone, "opendkim", "example.org").as_deref(),
            Some("v=DKIM1;k=rsa;p=AAAA;s=email;t=s")
        );
        let one = "opendkim._domainkey.example.org. TXT \"v=DKIM1;k=rsa;\" \"p=B\"\n";
        assert_eq!(
            dkim_txt_from_zone(one, "opendkim", "example.org").as_deref(),
            Some("v=DKIM1;k=rsa;p=B")
        );
        assert_eq!(dkim_txt_from_zone(one, "other", "example.org"), None);
    }
}
