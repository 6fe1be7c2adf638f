"""Harness for the federation tests with the real Delta Chat core (issue 3): relays as
separate hosts on their own loopback addresses (`127.a.b.2`, `127.a.b.3`) with every
service on its standard port, a private dnsmasq serving their A/MX/DKIM TXT records
(domain mode), and certificates from a throw-away test CA made with the openssl CLI.
IP-only relays (`mail_domain = 127.a.b.2`) need neither DNS nor the CA.

Builds on relayharness.py (the relay binary, the client helpers); nothing here mocks the
relay, the DNS server or the client. Every process started here is stopped by the
context managers, also when a test fails.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path
from typing import Iterator, Optional

from relayharness import ACTIVE_RELAYS, ANSI_ESCAPE, OUT_DIR, random_localpart, relay_binary

DNSMASQ = "/usr/sbin/dnsmasq"

# Standard ports (spec/relay.md §1).
STANDARD_PORTS = {
    "smtp": 25,
    "submission": 587,
    "submissions": 465,
    "imap": 143,
    "imaps": 993,
    "https": 443,
    "http": 80,
}

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

_NET_COUNTER = itertools.count(1)


def _can_bind(ip: str, port: int) -> Optional[socket.socket]:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((ip, port))
        return s
    except OSError:
        s.close()
        return None


def fresh_net() -> tuple[int, int]:
    """A loopback /24 `127.a.b.0` for one test: `a` in 200..249 from the pid (the Rust
    tests use 100..199), `b` from a counter; free when port 25 of .2–.5 can be bound."""
    a = 200 + os.getpid() % 50
    for _ in range(250):
        b = 1 + next(_NET_COUNTER) % 250
        socks = [_can_bind(f"127.{a}.{b}.{h}", 25) for h in range(2, 6)]
        ok = all(socks)
        for s in socks:
            if s:
                s.close()
        if ok:
            return a, b
    raise RuntimeError(f"no free loopback network 127.{a}.x.0/24")


# -- DNS ------------------------------------------------------------------------------


def dns_query(port: int, name: str, qtype: int, timeout: float = 0.3) -> Optional[tuple[int, int]]:
    """One UDP query to 127.0.0.1:`port` (RFC 1035 §4.1): (rcode, answer count)."""
    q = struct.pack(">HHHHHH", 0x5EED, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\0" + struct.pack(">HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(q, ("127.0.0.1", port))
            data, _ = s.recvfrom(1500)
        except OSError:
            return None
    if len(data) < 12 or data[:2] != q[:2]:
        return None
    return data[3] & 0x0F, struct.unpack(">H", data[6:8])[0]


class Dnsmasq:
    """dnsmasq on 127.0.0.1:<free port> serving only the given records."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.a: list[tuple[str, str]] = []
        self.mx: list[tuple[str, str, int]] = []
        self.txt: list[tuple[str, str]] = []
        self.port = 0
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = workdir / "dnsmasq.log"

    def add_mail_domain(self, domain: str, ip: str) -> None:
        """`<d> A <ip>` and `<d> MX 10 <d>.` (spec/relay.md §18)."""
        self.a.append((domain, ip))
        self.mx.append((domain, domain, 10))

    def add_txt(self, name: str, value: str) -> None:
        self.txt.append((name, value))

    def config(self) -> str:
        lines = [
            f"port={self.port}",
            "listen-address=127.0.0.1",
            "bind-interfaces",
            "no-resolv",
            "no-hosts",
            "local=/test/",
            "local-ttl=0",
            "pid-file=",
            "user=root",
            "log-queries",
            "log-facility=-",
        ]
        lines += [f"host-record={n},{ip}" for n, ip in self.a]
        lines += [f"mx-host={d},{h},{p}" for d, h, p in self.mx]
        for n, v in self.txt:
            chunks = ",".join(f'"{v[i:i + 255]}"' for i in range(0, len(v), 255))
            lines.append(f"txt-record={n},{chunks}")
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        """(Re)start with the current records; the port stays once chosen."""
        self.stop()
        last = ""
        for _ in range(5):
            if not self.port:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.bind(("127.0.0.1", 0))
                    self.port = s.getsockname()[1]
            conf = self.workdir / "dnsmasq.conf"
            conf.write_text(self.config())
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(
                [
                    DNSMASQ,
                    "--no-daemon",
                    f"--conf-file={conf}",
                    "--no-resolv",
                    "--no-hosts",
                    "--bind-interfaces",
                    "--listen-address=127.0.0.1",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            log.close()
            probe = self.a[0][0] if self.a else "probe.test"
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if dns_query(self.port, probe, 1) is not None:
                    return
                time.sleep(0.05)
            last = self.log_path.read_text(errors="replace")[-2000:]
            self.stop()
            time.sleep(0.2)
        raise RuntimeError(f"dnsmasq did not start on port {self.port}:\n{last}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


# -- certificates ---------------------------------------------------------------------


def _openssl(*args: str) -> None:
    r = subprocess.run(["openssl", *args], capture_output=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)}: {r.stderr.decode(errors='replace')}")


class TestCa:
    """A throw-away CA (EC P-256) and leaf certificates signed by it."""

    __test__ = False  # not a pytest class

    def __init__(self, workdir: Path):
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cert = self.dir / "ca.pem"
        self.key = self.dir / "ca.key"
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-noenc",
            "-days", "3", "-subj", "/CN=relaybox federation test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
            "-keyout", str(self.key), "-out", str(self.cert),
        )  # fmt: skip

    def leaf(self, name: str) -> tuple[Path, Path]:
        """(certificate chain file, key file) for the DNS name `name`."""
        key = self.dir / f"{name}.key"
        csr = self.dir / f"{name}.csr"
        crt = self.dir / f"{name}.crt"
        ext = self.dir / f"{name}.ext"
        _openssl(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-noenc",
            "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(csr),
        )  # fmt: skip
        ext.write_text(
            f"subjectAltName=DNS:{name}\n"
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth,clientAuth\n"
        )
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
            "-CAcreateserial", "-days", "3", "-extfile", str(ext), "-out", str(crt),
        )  # fmt: skip
        crt.write_text(crt.read_text() + self.cert.read_text())
        return crt, key


# -- relays ---------------------------------------------------------------------------


def dkim_txt_from_zone(text: str, selector: str, domain: str) -> Optional[str]:
    """The value of `<selector>._domainkey.<domain>` TXT in zone-file text (quoted
    strings joined, the record possibly in parentheses over several lines)."""
    owner = f"{selector}._domainkey.{domain}".lower()
    relative = f"{selector}._domainkey"
    lines = text.splitlines()
    for i, line in enumerate(lines):
        first = (line.split() or [""])[0].rstrip(".").lower()
        if first not in (owner, relative) or "TXT" not in line:
            continue
        record = line[line.index("TXT") + 3 :]
        depth = record.count("(") - record.count(")")
        j = i + 1
        while depth > 0 and j < len(lines) and j < i + 50:
            record += " " + lines[j]
            depth += lines[j].count("(") - lines[j].count(")")
            j += 1
        value = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', record)).replace('\\"', '"')
        if value:
            return value
    return None


class LoggedProcess:
    """A relaybox process of a test (`proc`) writing its log to `log_path`: stopping it
    (SIGTERM, bounded, else SIGKILL; the log copied to tests/out/python/ as
    `saved_log_name()`), and reading its log. Shared by the relays here and the front server
    of natharness."""

    proc: Optional[subprocess.Popen]
    log_path: Path

    def saved_log_name(self) -> str:
        raise NotImplementedError

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> Optional[int]:
        """SIGTERM (bounded), else SIGKILL; copies the log to tests/out/python/."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)
        status = self.proc.returncode
        self.proc = None
        try:
            OUT_DIR.mkdir(parents=True, exist_ok=True)
            (OUT_DIR / self.saved_log_name()).write_bytes(self.log_path.read_bytes())
        except OSError:
            pass
        return status

    def log_text(self) -> str:
        try:
            return ANSI_ESCAPE.sub("", self.log_path.read_text(errors="replace"))
        except OSError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        tail = self.log_text().splitlines()[-lines:]
        return f"--- last {len(tail)} lines of {self.log_path} ---\n" + "\n".join(tail)

    def panics(self) -> list[str]:
        return [line for line in self.log_text().splitlines() if "panicked at" in line]


class FedRelay(LoggedProcess):
    """`relaybox serve` on `ip` with the standard ports (ACTIVE_RELAYS-compatible)."""

    def __init__(self, workdir: Path, name: str, ip: str, mail_domain: str, params: dict):
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.ip = ip
        self.mail_domain = mail_domain
        self.data_dir = workdir / "data"
        self.config_path = workdir / "chatmail.ini"
        self.log_path = workdir / "relay.log"
        self.params = {
            "mail_domain": mail_domain,
            "data_dir": str(self.data_dir),
            **{f"{k}_listen": f"{ip}:{p}" for k, p in STANDARD_PORTS.items()},
            "max_load_1m": 10000,
            "min_available_memory": 1,
            "min_free_disk_space": 1,
            "log_stderr": "true",
            "turn_listen": "",
            # Issue 13: every test client comes from loopback.
            "max_connections_per_ip": 100000,
            "max_connection_rate_per_ip": 100000,
            "max_connection_burst_per_ip": 100000,
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            **params,
        }
        self.proc: Optional[subprocess.Popen] = None
        self.write_config()

    @property
    def address_domain(self) -> str:
        return f"[{self.mail_domain}]" if re.fullmatch(r"[0-9.]+", self.mail_domain) else self.mail_domain

    def new_address(self) -> str:
        return f"{random_localpart()}@{self.address_domain}"

    def dclogin_url(self, addr: str, password: str) -> str:
        """spec/client.md §2: IMAP 993 and SMTP 465 at the relay's IP, any certificate."""
        from urllib.parse import quote

        p = quote(password, safe="")
        return (
            f"dclogin:{addr}?p={p}&v=1"
            f"&ih={self.ip}&ip=993&is=ssl&sh={self.ip}&sp=465&ss=ssl&ic=3"
        )

    def write_config(self) -> None:
        lines = ["# written by tests/python/fedharness.py", "[params]"]
        lines += [f"{k} = {v}" for k, v in self.params.items()]
        self.config_path.write_text("\n".join(lines) + "\n")

    def dns_output(self) -> tuple[int, str, str]:
        """`relaybox dns --config <ini>`: (status, stdout, stderr)."""
        self.write_config()
        r = subprocess.run(
            [str(relay_binary()), "dns", "--config", str(self.config_path)],
            capture_output=True,
            timeout=60,
            env={**os.environ, "NO_COLOR": "1"},
        )
        return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")

    def dkim_txt(self) -> Optional[str]:
        _, out, _ = self.dns_output()
        txt = dkim_txt_from_zone(out, "opendkim", self.mail_domain)
        if txt is None:
            zone = self.data_dir / "dns.zone"
            if zone.exists():
                txt = dkim_txt_from_zone(zone.read_text(), "opendkim", self.mail_domain)
        return txt

    def start(self) -> None:
        binary = relay_binary()
        if not binary.exists():
            raise RuntimeError(f"{binary} does not exist: run `cargo build -p relaybox` first")
        self.write_config()
        env = dict(os.environ)
        env.setdefault("RELAYBOX_LOG", "info")
        env["NO_COLOR"] = "1"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(binary), "serve", "--config", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"relay {self.name} exited with {self.proc.returncode} at start\n" + self.log_tail()
                )
            try:
                with socket.create_connection((self.ip, STANDARD_PORTS["http"]), timeout=0.5):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"relay {self.name} did not accept within {START_TIMEOUT} s\n" + self.log_tail())
            time.sleep(0.1)

    def saved_log_name(self) -> str:
        return f"{self.name}-relay.log"


@contextlib.contextmanager
def _registered(relays: list[FedRelay]) -> Iterator[None]:
    ACTIVE_RELAYS.extend(relays)
    try:
        yield
    finally:
        for r in relays:
            if r in ACTIVE_RELAYS:
                ACTIVE_RELAYS.remove(r)
            r.stop()


@contextlib.contextmanager
def domain_relays(workdir: Path, prefix: str, n: int = 2) -> Iterator[list[FedRelay]]:
    """`n` domain relays `r<i>-<a>-<b>.test` at 127.a.b.<i+1> with test-CA certificates,
    the CA as tls_extra_roots, and a dnsmasq with their A, MX and DKIM TXT records."""
    a, b = fresh_net()
    ca = TestCa(workdir / "ca")
    dns = Dnsmasq(workdir / "dns")
    relays = []
    for i in range(n):
        domain = f"r{i + 1}-{a}-{b}.test"
        ip = f"127.{a}.{b}.{i + 2}"
        dns.add_mail_domain(domain, ip)
        crt, key = ca.leaf(domain)
        relays.append(
            FedRelay(
                workdir / f"relay{i + 1}",
                f"{prefix}-r{i + 1}",
                ip,
                domain,
                {
                    "tls_external_cert_and_key": f"{crt} {key}",
                    "tls_extra_roots": str(ca.cert),
                    "dns_resolver": "127.0.0.1:0",  # set below, once dnsmasq has its port
                },
            )
        )
    try:
        dns.start()
        for r in relays:
            r.params["dns_resolver"] = f"127.0.0.1:{dns.port}"
        started = set()
        for r in relays:
            txt = r.dkim_txt()
            if txt is None:  # fallback: the zone file written at start
                r.start()
                started.add(r.name)
                txt = r.dkim_txt()
            if txt is not None:
                dns.add_txt(f"opendkim._domainkey.{r.mail_domain}", txt)
        dns.start()
        with _registered(relays):
            for r in relays:
                if r.name not in started:
                    r.start()
            yield relays
    finally:
        for r in relays:
            r.stop()
        dns.stop()


@contextlib.contextmanager
def ip_only_relays(workdir: Path, prefix: str) -> Iterator[list[FedRelay]]:
    """Two IP-only relays (`mail_domain = 127.a.b.2` / `.3`, MODE-1), no DNS."""
    a, b = fresh_net()
    relays = [
        FedRelay(workdir / f"relay{h - 1}", f"{prefix}-r{h - 1}", f"127.{a}.{b}.{h}", f"127.{a}.{b}.{h}", {})
        for h in (2, 3)
    ]
    with _registered(relays):
        for r in relays:
            r.start()
        yield relays
