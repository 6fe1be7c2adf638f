"""Harness for real-client tests whose hosts live in a network namespace the test creates
(issue 17, the move): one namespace per test with its own loopback, on which each "machine"
has an address of 10.77.0.0/24 (the old relay .2, the new relay .3, the DNS server .53) and
every service its standard port; a dnsmasq there that is the namespace's only resolver
(`/etc/netns/<ns>/resolv.conf`, which `ip netns exec` mounts over /etc/resolv.conf), with the
A records in an `addn-hosts` file so that a record can be changed while it runs (SIGHUP);
relays and deltachat-rpc-server started through `ip netns exec`, so the Delta Chat core
finds the relay by its host name through that DNS server.

Builds on relayharness.py and fedharness.py (relay binary, test CA, relay config, client
helpers); nothing here mocks the relay, the DNS server or the client. Every process started
here is stopped and the namespace and its /etc/netns directory are deleted by the context
managers, also when a test fails.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

from deltachat_rpc_client import DeltaChat, Rpc

from fedharness import DNSMASQ, STANDARD_PORTS, FedRelay
from relayharness import OUT_DIR, relay_binary, rpc_server_binary

# The namespace's "machines" (all on its loopback).
SUBNET = "10.77.0"
DNS_IP = f"{SUBNET}.53"

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
TOOL_TIMEOUT = 120.0

_CLONE_NEWNET = 0x40000000
_COUNTER = itertools.count(1)
_LIBC = ctypes.CDLL(None, use_errno=True)


def netns_unavailable() -> Optional[str]:
    """Why namespaces cannot be used here (not root, no `ip`, no dnsmasq), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2) for network namespaces"
    if not Path(DNSMASQ).exists():
        return f"no {DNSMASQ} for the private DNS server"
    return None


def _run(*argv: str, timeout: float = 30.0) -> None:
    r = subprocess.run(argv, capture_output=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {r.stderr.decode(errors='replace').strip()}")


class Netns:
    """A fresh network namespace `rbmv<pid>x<n>` with loopback up, the given host numbers
    of SUBNET on it, and /etc/netns/<name>/resolv.conf naming DNS_IP."""

    def __init__(self, hosts: tuple[int, ...] = (2, 3, 53)):
        self.name = f"rbmv{os.getpid()}x{next(_COUNTER)}"
        self.etc = Path("/etc/netns") / self.name
        self.hosts = hosts

    def create(self) -> None:
        _run("ip", "netns", "add", self.name)
        _run("ip", "-n", self.name, "link", "set", "lo", "up")
        for h in self.hosts:
            _run("ip", "-n", self.name, "addr", "add", f"{SUBNET}.{h}/32", "dev", "lo")
        self.etc.mkdir(parents=True, exist_ok=True)
        (self.etc / "resolv.conf").write_text(f"nameserver {DNS_IP}\noptions timeout:1 attempts:2\n")

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)
        shutil.rmtree(self.etc, ignore_errors=True)

    def argv(self, *argv: str) -> list[str]:
        """`argv` run inside the namespace (`ip netns exec` execs it: same pid)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, *argv: str, timeout: float = TOOL_TIMEOUT) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.argv(*argv),
            capture_output=True,
            timeout=timeout,
            env={**os.environ, "NO_COLOR": "1"},
        )

    def call(self, fn: Callable, timeout: float = 10.0):
        """Run `fn` in a thread that entered the namespace (setns changes only the calling
        thread's network namespace), e.g. to open a socket there."""
        result: dict = {}

        def body():
            try:
                fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
                try:
                    if _LIBC.setns(fd, _CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns")
                finally:
                    os.close(fd)
                result["value"] = fn()
            except BaseException as e:  # noqa: BLE001 - re-raised below
                result["error"] = e

        t = threading.Thread(target=body, daemon=True, name=f"netns:{self.name}")
        t.start()
        t.join(timeout)
        if t.is_alive():
            raise TimeoutError(f"call in namespace {self.name}: no result within {timeout} s")
        if "error" in result:
            raise result["error"]
        return result.get("value")

    def accepts(self, ip: str, port: int) -> bool:
        def probe():
            try:
                with socket.create_connection((ip, port), timeout=0.5):
                    return True
            except OSError:
                return False

        return self.call(probe)

    def dns(self, name: str, qtype: int = 1) -> Optional[list[str]]:
        """The A addresses DNS_IP:53 answers for `name` (None when there is no answer)."""

        def ask():
            return _a_query(DNS_IP, name)

        return self.call(ask)


@contextlib.contextmanager
def netns(hosts: tuple[int, ...] = (2, 3, 53)) -> Iterator[Netns]:
    ns = Netns(hosts)
    try:
        ns.create()
        yield ns
    finally:
        ns.delete()


def _a_query(server: str, name: str, timeout: float = 0.5) -> Optional[list[str]]:
    """One UDP A query (RFC 1035 §4.1) to server:53: the answer's addresses."""
    import struct

    q = struct.pack(">HHHHHH", 0x7A11, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\0" + struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(q, (server, 53))
            data, _ = s.recvfrom(1500)
        except OSError:
            return None
    if len(data) < 12 or data[:2] != q[:2]:
        return None
    ancount = struct.unpack(">H", data[6:8])[0]
    pos = len(q)  # the question is echoed unchanged
    addrs = []
    for _ in range(ancount):
        # RFC 1035 §4.1.4: a name is labels or a pointer (two bytes starting 0b11).
        while pos < len(data):
            n = data[pos]
            if n & 0xC0 == 0xC0:
                pos += 2
                break
            pos += 1 + n
            if n == 0:
                break
        rtype, _cls, _ttl, rdlen = struct.unpack(">HHIH", data[pos : pos + 10])
        pos += 10
        if rtype == 1 and rdlen == 4:
            addrs.append(socket.inet_ntoa(data[pos : pos + 4]))
        pos += rdlen
    return addrs


class NsDnsmasq:
    """dnsmasq on DNS_IP:53 in the namespace: MX and TXT records fixed at start, A records
    in an `addn-hosts` file that `set_a` rewrites and makes it re-read (SIGHUP; dnsmasq
    re-reads addn-hosts files then, not its `address=`/`host-record=` lines). TTL 0."""

    def __init__(self, ns: Netns, workdir: Path):
        self.ns = ns
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.hosts_file = workdir / "hosts"
        self.a: dict[str, str] = {}
        self.mx: list[tuple[str, str]] = []
        self.txt: list[tuple[str, str]] = []
        self.log_path = workdir / "dnsmasq.log"
        self.proc: Optional[subprocess.Popen] = None

    def add_mail_domain(self, domain: str, ip: str) -> None:
        """`<d> A <ip>` and `<d> MX 10 <d>.` (spec/relay.md §18)."""
        self.a[domain] = ip
        self.mx.append((domain, domain))

    def add_txt(self, name: str, value: str) -> None:
        self.txt.append((name, value))

    def _write_hosts(self) -> None:
        tmp = self.hosts_file.with_suffix(".tmp")
        tmp.write_text("".join(f"{ip} {name}\n" for name, ip in self.a.items()))
        tmp.replace(self.hosts_file)

    def config(self) -> str:
        lines = [
            "port=53",
            f"listen-address={DNS_IP}",
            "bind-interfaces",
            "no-resolv",
            "no-hosts",
            f"addn-hosts={self.hosts_file}",
            "local=/test/",
            "local-ttl=0",
            "pid-file=",
            "user=root",
            "log-queries",
            "log-facility=-",
        ]
        lines += [f"mx-host={d},{h},10" for d, h in self.mx]
        for n, v in self.txt:
            chunks = ",".join(f'"{v[i:i + 255]}"' for i in range(0, len(v), 255))
            lines.append(f"txt-record={n},{chunks}")
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        self._write_hosts()
        conf = self.workdir / "dnsmasq.conf"
        conf.write_text(self.config())
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.ns.argv(DNSMASQ, "--no-daemon", f"--conf-file={conf}"),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        probe = next(iter(self.a), "probe.test")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self.ns.dns(probe) is not None:
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            "dnsmasq did not start:\n" + self.log_path.read_text(errors="replace")[-2000:]
        )

    def set_a(self, name: str, ip: str, timeout: float = 10.0) -> None:
        """Point `name` at `ip` and wait until dnsmasq answers with it."""
        self.a[name] = ip
        self._write_hosts()
        assert self.proc is not None and self.proc.poll() is None, "dnsmasq is not running"
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while True:
            got = self.ns.dns(name)
            if got == [ip]:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"dnsmasq answers {got} for {name}, not {ip}, after SIGHUP")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None
        try:
            OUT_DIR.mkdir(parents=True, exist_ok=True)
            (OUT_DIR / "netns-dnsmasq.log").write_bytes(self.log_path.read_bytes())
        except OSError:
            pass


class NsRelay(FedRelay):
    """`relaybox serve` inside the namespace on `ip` with the standard ports; its
    command-line tools (`move`, `restore`, `queue`) run there too."""

    def __init__(self, ns: Netns, workdir: Path, name: str, ip: str, mail_domain: str, params: dict):
        super().__init__(workdir, name, ip, mail_domain, params)
        self.ns = ns

    def start(self, write_config: bool = True) -> None:
        """Start it and wait until it accepts; `write_config=False` keeps the config file
        as it is (e.g. as `relaybox restore` wrote it)."""
        binary = relay_binary()
        if not binary.exists():
            raise RuntimeError(f"{binary} does not exist: run `cargo build -p relaybox` first")
        if write_config:
            self.write_config()
        env = {**os.environ, "NO_COLOR": "1"}
        env.setdefault("RELAYBOX_LOG", "info")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.ns.argv(str(binary), "serve", "--config", str(self.config_path)),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + START_TIMEOUT
        pending = {"imaps", "submissions", "https", "smtp"}
        while pending:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"relay {self.name} exited with {self.proc.returncode} at start\n" + self.log_tail()
                )
            for key in list(pending):
                if self.ns.accepts(self.ip, STANDARD_PORTS[key]):
                    pending.discard(key)
            if not pending:
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"relay {self.name} did not accept on {sorted(pending)} within "
                    f"{START_TIMEOUT} s\n" + self.log_tail()
                )
            time.sleep(0.1)

    def move_listen(self, from_ip: str) -> int:
        """Rewrite the `*_listen` keys of the config file that name `from_ip` to this
        relay's address (the machine-local keys after a restore); the number changed."""
        lines = self.config_path.read_text().splitlines(keepends=True)
        changed = 0
        for i, line in enumerate(lines):
            key, sep, value = line.partition("=")
            if sep and key.strip().endswith("_listen") and value.strip().startswith(from_ip + ":"):
                port = value.strip()[len(from_ip) + 1 :]
                lines[i] = f"{key.rstrip()} = {self.ip}:{port}\n"
                changed += 1
        self.config_path.write_text("".join(lines))
        return changed

    def tool(self, *args: str, timeout: float = TOOL_TIMEOUT) -> subprocess.CompletedProcess:
        """`relaybox <args>` inside the namespace."""
        return self.ns.run(str(relay_binary()), *args, timeout=timeout)

    def dclogin_url(self, addr: str, password: str) -> str:
        """spec/client.md §2: IMAP 993 and SMTP 465 at the relay's HOST NAME (resolved by
        the client through the namespace's DNS), any certificate (ic=3)."""
        from urllib.parse import quote

        p = quote(password, safe="")
        h = self.mail_domain
        return f"dclogin:{addr}?p={p}&v=1&ih={h}&ip=993&is=ssl&sh={h}&sp=465&ss=ssl&ic=3"


@contextlib.contextmanager
def ns_deltachat(ns: Netns, workdir: Path, name: str) -> Iterator[DeltaChat]:
    """One deltachat-rpc-server inside the namespace (so its resolver is the namespace's
    DNS server); stderr to tests/out/python/<name>-rpc-server.log. Stopped after."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    with open(OUT_DIR / f"{name}-rpc-server.log", "wb") as log:
        rpc = Rpc(
            accounts_dir=str(workdir / "accounts"),
            # Popen takes the argument list as it takes a path.
            rpc_server_path=ns.argv(rpc_server_binary()),
            stderr=log,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info")},
        )
        rpc.start()
        try:
            yield DeltaChat(rpc)
        finally:
            try:
                rpc.close()
            finally:
                if rpc.process.poll() is None:
                    rpc.process.kill()
                rpc.process.wait(timeout=STOP_TIMEOUT)
