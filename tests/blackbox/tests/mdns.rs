//! Finding the box (issue #6, item 2): `relaybox.local` over mDNS, checked across a real
//! link. Two network namespaces made by the test ("box" and "lan") are joined by a veth
//! pair; the announcer (`daemon/examples/mdns_announce.rs`, which calls
//! `relaybox::appliance::mdns::announce`) runs in "box" under `ip netns exec`, and the
//! test asks from "lan" with hand-built mDNS queries (RFC 6762 §6.7 one-shot queries from
//! an ephemeral port, answered by unicast) and listens on 224.0.0.251:5353 there for the
//! goodbye packets. Nothing touches the host's own network; the namespaces are deleted
//! on drop.
//!
//! Needs root (namespaces) and the helper binary:
//! `cargo build -p relaybox --example mdns_announce`.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BOX_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const BOX_V4_EXTRA: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
const LAN_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const BOX_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
const MDNS_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
const MDNS_PORT: u16 = 5353;
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const TYPE_SRV: u16 = 33;
/// How long the announcer may take to probe and answer (RFC 6762 §8.1 probing takes
/// 750 ms) and how long an address change may take to show (mdns-sd polls every 5 s).
const ANSWER_WAIT: Duration = Duration::from_secs(10);
const CHANGE_WAIT: Duration = Duration::from_secs(15);

#[test]
fn relaybox_local_resolves_on_the_lan_follows_addresses_and_says_goodbye() {
    let net = Netns::create();
    let (query, listen) = net.lan_sockets();
    let mut announcer = Announcer::start(&net.box_ns);

    // A record: the box's veth address, nothing else (no loopback), TTL > 0.
    let a = wait_for(&query, "relaybox.local", TYPE_A, ANSWER_WAIT, |rrs| {
        !rrs.is_empty()
    });
    assert_eq!(
        addrs(&a),
        BTreeSet::from([IpAddr::V4(BOX_V4)]),
        "A answer: {a:?}"
    );
    assert!(a.iter().all(|rr| rr.ttl > 0), "A answer TTLs: {a:?}");

    // AAAA record: the ULA on the veth is among them (link-local ones may be too).
    let aaaa = wait_for(&query, "relaybox.local", TYPE_AAAA, ANSWER_WAIT, |rrs| {
        !rrs.is_empty()
    });
    let v6 = addrs(&aaaa);
    assert!(v6.contains(&IpAddr::V6(BOX_V6)), "AAAA answer: {aaaa:?}");
    assert!(
        !v6.contains(&IpAddr::V6(Ipv6Addr::LOCALHOST)),
        "AAAA answer: {aaaa:?}"
    );

    // The setup service: SRV of "Relaybox setup._http._tcp.local" points at port 80 on
    // relaybox.local (RFC 6763 §5).
    let srv = wait_for(
        &query,
        "Relaybox setup._http._tcp.local",
        TYPE_SRV,
        ANSWER_WAIT,
        |rrs| !rrs.is_empty(),
    );
    assert!(
        srv.iter().any(|rr| rr.data
            == Data::Srv {
                port: 80,
                target: "relaybox.local".into()
            }),
        "SRV answer: {srv:?}"
    );

    // Another name is not claimed.
    let other = ask(&query, "otherbox.local", TYPE_A, Duration::from_millis(800));
    assert!(other.is_empty(), "answer for otherbox.local: {other:?}");

    // Addresses follow the host: an address added on the box is announced, and
    // withdrawn again once removed.
    net.box_ip(&["addr", "add", &format!("{BOX_V4_EXTRA}/24"), "dev", "va"]);
    let both = BTreeSet::from([IpAddr::V4(BOX_V4), IpAddr::V4(BOX_V4_EXTRA)]);
    let a = wait_for(&query, "relaybox.local", TYPE_A, CHANGE_WAIT, |rrs| {
        addrs(rrs) == both
    });
    assert_eq!(addrs(&a), both, "A answer after adding {BOX_V4_EXTRA}");
    net.box_ip(&["addr", "del", &format!("{BOX_V4_EXTRA}/24"), "dev", "va"]);
    let one = BTreeSet::from([IpAddr::V4(BOX_V4)]);
    let a = wait_for(&query, "relaybox.local", TYPE_A, CHANGE_WAIT, |rrs| {
        addrs(rrs) == one
    });
    assert_eq!(addrs(&a), one, "A answer after removing {BOX_V4_EXTRA}");

    // Shutdown: a goodbye (RFC 6762 §10.1: TTL 0) for relaybox.local's A record is
    // multicast on the link, the process ends cleanly, and nobody answers any more.
    drain(&listen);
    announcer.stop();
    let goodbye = wait_multicast(&listen, Duration::from_secs(5), |rr| {
        rr.name == "relaybox.local" && rr.rtype == TYPE_A && rr.ttl == 0
    });
    assert_eq!(
        goodbye.map(|rr| rr.data),
        Some(Data::Addr(IpAddr::V4(BOX_V4))),
        "goodbye for relaybox.local A"
    );
    announcer.wait_exit();
    let after = ask(
        &query,
        "relaybox.local",
        TYPE_A,
        Duration::from_millis(1500),
    );
    assert!(after.is_empty(), "answer after shutdown: {after:?}");
}

// ---- namespaces ------------------------------------------------------------------

/// Two namespaces joined by a veth pair: `va` (box, 10.77.0.1/24 and fd77::1/64) and
/// `vb` (lan, 10.77.0.2/24). Deleted on drop (which also deletes the veth pair).
struct Netns {
    box_ns: String,
    lan_ns: String,
}

impl Netns {
    fn create() -> Netns {
        let id = std::process::id();
        let net = Netns {
            box_ns: format!("rbmdns-box-{id}"),
            lan_ns: format!("rbmdns-lan-{id}"),
        };
        // The guard exists before the first namespace, so a failure part-way cleans up.
        run("ip", &["netns", "add", &net.box_ns]);
        run("ip", &["netns", "add", &net.lan_ns]);
        let (b, l) = (net.box_ns.as_str(), net.lan_ns.as_str());
        run(
            "ip",
            &[
                "-n", b, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", l,
            ],
        );
        for (ns, dev, v4) in [(b, "va", BOX_V4), (l, "vb", LAN_V4)] {
            run("ip", &["-n", ns, "link", "set", "lo", "up"]);
            run(
                "ip",
                &["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev],
            );
            run("ip", &["-n", ns, "link", "set", dev, "up"]);
        }
        // `nodad`: usable at once, no duplicate address detection delay.
        run(
            "ip",
            &[
                "-n",
                b,
                "addr",
                "add",
                &format!("{BOX_V6}/64"),
                "dev",
                "va",
                "nodad",
            ],
        );
        // The lan side sends its queries to the group through the veth.
        run("ip", &["-n", l, "route", "add", "224.0.0.0/4", "dev", "vb"]);
        net
    }

    /// `ip -n <box> ARGS…`, asserted.
    fn box_ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.box_ns.as_str()];
        all.extend_from_slice(args);
        run("ip", &all);
    }

    /// Two UDP sockets inside the lan namespace: one on an ephemeral port for one-shot
    /// queries, one on 5353 in the mDNS group for what the box multicasts. A socket
    /// stays in the namespace it was created in, so only the creating thread switches.
    fn lan_sockets(&self) -> (UdpSocket, UdpSocket) {
        let path = PathBuf::from("/run/netns").join(&self.lan_ns);
        std::thread::spawn(move || {
            enter_netns(&path);
            let query = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind query socket");
            let listen =
                UdpSocket::bind((Ipv4Addr::UNSPECIFIED, MDNS_PORT)).expect("bind 5353 in lan");
            listen
                .join_multicast_v4(&MDNS_GROUP, &LAN_V4)
                .expect("join 224.0.0.251 in lan");
            (query, listen)
        })
        .join()
        .expect("socket thread")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in [&self.box_ns, &self.lan_ns] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Move the calling thread into the network namespace at `path` (setns(2)).
fn enter_netns(path: &Path) {
    use std::os::fd::AsRawFd;
    const CLONE_NEWNET: i32 = 0x4000_0000;
    unsafe extern "C" {
        fn setns(fd: i32, nstype: i32) -> i32;
    }
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // SAFETY: setns only reads the descriptor, which `file` keeps open during the call;
    // it changes the namespace of this thread alone.
    let rc = unsafe { setns(file.as_raw_fd(), CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "setns {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {}: {}\n(this test needs root for network namespaces)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---- the announcer process -------------------------------------------------------

/// The helper binary running `announce("relaybox", 80)` in the box namespace; killed on
/// drop if still running.
struct Announcer {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: mpsc::Receiver<String>,
}

impl Announcer {
    fn start(ns: &str) -> Announcer {
        let bin = helper_binary();
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(&bin)
            .args(["relaybox", "80"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let stdin = child.stdin.take();
        let out = child.stdout.take().expect("stdout piped");
        let (tx, stdout) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut a = Announcer {
            child,
            stdin,
            stdout,
        };
        a.expect_line("announcing relaybox.local.", Duration::from_secs(10));
        a
    }

    fn expect_line(&mut self, want: &str, wait: Duration) {
        match self.stdout.recv_timeout(wait) {
            Ok(line) => assert_eq!(line, want, "announcer stdout"),
            Err(e) => panic!("announcer: no {want:?} within {wait:?} ({e})"),
        }
    }

    /// Ask the helper to shut the announcer down (it sends goodbyes, then exits).
    fn stop(&mut self) {
        let mut stdin = self.stdin.take().expect("stop once");
        stdin.write_all(b"stop\n").expect("write stop");
    }

    /// The helper confirms the shutdown and exits 0 within a few seconds.
    fn wait_exit(&mut self) {
        self.expect_line("stopped", Duration::from_secs(5));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                assert!(status.success(), "announcer exit: {status}");
                return;
            }
            assert!(Instant::now() < deadline, "announcer did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        // `ip netns exec` execs the helper, so the pid is the helper's.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `RELAYBOX_MDNS_HELPER`, else `<target>/debug/examples/mdns_announce` (as
/// `relay::binary` finds the daemon).
fn helper_binary() -> PathBuf {
    let path = match (
        std::env::var_os("RELAYBOX_MDNS_HELPER"),
        std::env::var_os("CARGO_TARGET_DIR"),
    ) {
        (Some(p), _) => PathBuf::from(p),
        (None, Some(t)) => PathBuf::from(t).join("debug/examples/mdns_announce"),
        (None, None) => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/debug/examples/mdns_announce")
            .components()
            .collect(),
    };
    assert!(
        path.is_file(),
        "mDNS helper not found at {}: run `cargo build -p relaybox --example mdns_announce` \
         (or set RELAYBOX_MDNS_HELPER)",
        path.display()
    );
    path
}

// ---- a little mDNS, by hand (RFC 1035 §4, RFC 6762) ------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Data {
    Addr(IpAddr),
    Srv { port: u16, target: String },
    Other,
}

#[derive(Debug, Clone)]
struct Record {
    /// Lower case, without the trailing dot.
    name: String,
    rtype: u16,
    ttl: u32,
    data: Data,
}

fn addrs(rrs: &[Record]) -> BTreeSet<IpAddr> {
    rrs.iter()
        .filter_map(|rr| match rr.data {
            Data::Addr(ip) => Some(ip),
            _ => None,
        })
        .collect()
}

/// Ask until `done` holds for the answer records about `name`/`rtype`, or `wait` ends;
/// returns the last answer.
fn wait_for(
    sock: &UdpSocket,
    name: &str,
    rtype: u16,
    wait: Duration,
    done: impl Fn(&[Record]) -> bool,
) -> Vec<Record> {
    let deadline = Instant::now() + wait;
    loop {
        let rrs = ask(sock, name, rtype, Duration::from_millis(500));
        if done(&rrs) || Instant::now() >= deadline {
            return rrs;
        }
    }
}

/// One one-shot query for `name`/`rtype` sent to the group from the query socket's
/// ephemeral port (RFC 6762 §5.1, answered by unicast per §6.7); the matching answer
/// records received within `wait`.
fn ask(sock: &UdpSocket, name: &str, rtype: u16, wait: Duration) -> Vec<Record> {
    static NEXT_ID: AtomicU16 = AtomicU16::new(1);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]); // flags 0, QDCOUNT 1
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&rtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes()); // class IN
    sock.send_to(&q, (MDNS_GROUP, MDNS_PORT))
        .expect("send query");
    let want = name.to_ascii_lowercase();
    let mut found = Vec::new();
    let deadline = Instant::now() + wait;
    while let Some((msg, _)) = recv_until(sock, deadline) {
        found.extend(
            parse_answers(&msg)
                .into_iter()
                .filter(|rr| rr.name == want && rr.rtype == rtype),
        );
        if !found.is_empty() {
            break;
        }
    }
    found
}

/// The first answer record multicast on the link that matches `pick`, within `wait`.
fn wait_multicast(
    sock: &UdpSocket,
    wait: Duration,
    pick: impl Fn(&Record) -> bool,
) -> Option<Record> {
    let deadline = Instant::now() + wait;
    while let Some((msg, _)) = recv_until(sock, deadline) {
        if let Some(rr) = parse_answers(&msg).into_iter().find(|rr| pick(rr)) {
            return Some(rr);
        }
    }
    None
}

/// Forget what was multicast so far (announcements), so only later packets count.
fn drain(sock: &UdpSocket) {
    let deadline = Instant::now() + Duration::from_millis(200);
    while recv_until(sock, deadline).is_some() {}
}

fn recv_until(sock: &UdpSocket, deadline: Instant) -> Option<(Vec<u8>, SocketAddr)> {
    let left = deadline.checked_duration_since(Instant::now())?;
    if left.is_zero() {
        return None;
    }
    sock.set_read_timeout(Some(left)).expect("set timeout");
    let mut buf = vec![0u8; 9000];
    match sock.recv_from(&mut buf) {
        Ok((n, from)) => {
            buf.truncate(n);
            Some((buf, from))
        }
        Err(_) => None,
    }
}

/// The answer section of a DNS response (QR set); an empty list for anything else or
/// anything malformed.
fn parse_answers(msg: &[u8]) -> Vec<Record> {
    parse(msg).unwrap_or_default()
}

fn parse(msg: &[u8]) -> Option<Vec<Record>> {
    let u16_at = |i: usize| Some(u16::from_be_bytes([*msg.get(i)?, *msg.get(i + 1)?]));
    if msg.get(2)? & 0x80 == 0 {
        return Some(Vec::new()); // a query, not a response
    }
    let qd = u16_at(4)?;
    let an = u16_at(6)?;
    let mut pos = 12;
    for _ in 0..qd {
        pos = read_name(msg, pos)?.1 + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        let (name, p) = read_name(msg, pos)?;
        let rtype = u16_at(p)?;
        let ttl = u32::from_be_bytes(msg.get(p + 4..p + 8)?.try_into().ok()?);
        let len = usize::from(u16_at(p + 8)?);
        let start = p + 10;
        let rdata = msg.get(start..start + len)?;
        let data = match rtype {
            TYPE_A => Data::Addr(IpAddr::from(<[u8; 4]>::try_from(rdata).ok()?)),
            TYPE_AAAA => Data::Addr(IpAddr::from(<[u8; 16]>::try_from(rdata).ok()?)),
            TYPE_SRV => Data::Srv {
                port: u16_at(start + 4)?,
                target: read_name(msg, start + 6)?.0,
            },
            _ => Data::Other,
        };
        out.push(Record {
            name,
            rtype,
            ttl,
            data,
        });
        pos = start + len;
    }
    Some(out)
}

/// A possibly compressed name at `pos` (RFC 1035 §4.1.4), lower case without the final
/// dot, and the position after it. At most 64 jumps.
fn read_name(msg: &[u8], mut pos: usize) -> Option<(String, usize)> {
    let mut labels: Vec<String> = Vec::new();
    let mut after = None;
    for _ in 0..64 {
        let len = *msg.get(pos)?;
        match len {
            0 => return Some((labels.join("."), after.unwrap_or(pos + 1))),
            l if l & 0xc0 == 0xc0 => {
                after.get_or_insert(pos + 2);
                pos = usize::from(u16::from_be_bytes([l & 0x3f, *msg.get(pos + 1)?]));
            }
            l => {
                let label = msg.get(pos + 1..pos + 1 + usize::from(l))?;
                labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
                pos += 1 + usize::from(l);
            }
        }
    }
    None
}
