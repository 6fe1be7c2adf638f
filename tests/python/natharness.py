"""Harness for the front-server tests (issue 20 item 3): four network namespaces joined by
veth pairs, as a home box behind NAT sees the internet.

    home 192.168.7.2 --- 192.168.7.1 nat 10.20.2.2 --- 10.20.2.1 internet 10.20.1.1 --- 10.20.1.2 front

- "internet": the private DNS server (dnsmasq on 10.77.0.53, as netnsharness.NsDnsmasq),
  a second relay (10.77.0.3), the Delta Chat clients, and a spare client address
  (10.77.0.99) for probes; all on its loopback. It routes between the front and the NAT.
- "front": `relaybox front` with the public address 10.20.1.2.
- "nat": the home router. nft masquerades home's outbound traffic behind 10.20.2.2, drops
  every connection from the internet side (forwarded or to itself) and drops home's
  outbound TCP port 25 (an ISP that blocks it).
- "home": the home relay on 192.168.7.2, which nobody on the internet side can route to.

Every namespace's resolver is the DNS server (netnsharness.Netns writes resolv.conf). Builds
on netnsharness.py, fedharness.py and relayharness.py; nothing here mocks the relay, the DNS
server, the NAT or the client. Every process started here is stopped and every namespace
deleted by the context managers, also when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from fedharness import LoggedProcess
from netnsharness import SUBNET, Netns
from relayharness import relay_binary

NFT = shutil.which("nft") or "/usr/sbin/nft"

FRONT_PUBLIC = "10.20.1.2"
INET_TO_FRONT = "10.20.1.1"
NAT_PUBLIC = "10.20.2.2"
INET_TO_NAT = "10.20.2.1"
HOME_GW = "192.168.7.1"
HOME_IP = "192.168.7.2"
RELAY2_IP = f"{SUBNET}.3"
PROBE_IP = f"{SUBNET}.99"
TUNNEL_PORT = 4433

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

# The home router (the "nat" namespace): "wan" faces the internet, "lan" the home.
NAT_RULES = """
table ip rbnat {
    chain forward {
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "lan" oifname "wan" tcp dport 25 counter name blocked25 drop
        iifname "lan" oifname "wan" accept
        counter name inbound drop
    }
    chain input {
        type filter hook input priority filter; policy drop;
        ct state established,related accept
        iifname "lo" accept
        iifname "lan" accept
        counter name inbound drop
    }
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" masquerade
    }
    counter blocked25 { }
    counter inbound { }
}
"""


def nat_unavailable() -> Optional[str]:
    """Why the NAT cannot be built here (no nft), or None."""
    if not Path(NFT).exists():
        return "no `nft` (nftables) for the NAT namespace"
    return None


def _ok(r: subprocess.CompletedProcess, what: str) -> str:
    out = r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")
    if r.returncode != 0:
        raise RuntimeError(f"{what} exited with {r.returncode}: {out.strip()}")
    return out


@dataclass
class Topology:
    inet: Netns
    front: Netns
    nat: Netns
    home: Netns

    def uplink(self, up: bool) -> None:
        """Cut (or restore) the home's uplink: the NAT's interface to the internet goes
        down, as when the line drops; the kernel forgets the NAT's masquerade mappings on
        that interface then, as a router that loses its line does."""
        state = "up" if up else "down"
        _ok(
            self.nat.run("ip", "link", "set", "dev", "wan", state), f"ip link set wan {state} (nat)"
        )
        if up:
            _ok(
                self.nat.run("ip", "route", "replace", "default", "via", INET_TO_NAT),
                "default route (nat)",
            )

    def renumber(self, new_public: str) -> None:
        """The home router's public address changes (a line that reconnects with a new
        address, a CGNAT that moves the home to another one): the old address is gone
        at once, and with it every mapping the NAT made."""
        _ok(self.nat.run("ip", "addr", "flush", "dev", "wan"), "ip addr flush (nat)")
        _ok(
            self.nat.run("ip", "addr", "add", f"{new_public}/24", "dev", "wan"), "ip addr add (nat)"
        )
        _ok(
            self.nat.run("ip", "route", "replace", "default", "via", INET_TO_NAT),
            "default route (nat)",
        )

    def refuse_https_from_home(self, ip: str) -> None:
        """`ip` on the internet refuses HTTPS from the home's public address (a peer
        without `/mxdeliv`, as far as the home box can tell): mail to it must go by SMTP."""
        rules = f"""
table ip rbpeer {{
    chain input {{
        type filter hook input priority filter; policy accept;
        ip saddr 10.20.2.0/24 ip daddr {ip} tcp dport 443 reject with tcp reset
    }}
}}
"""
        _ok(
            subprocess.run(
                self.inet.argv(NFT, "-f", "-"),
                input=rules.encode(),
                capture_output=True,
                timeout=30,
            ),
            "nft -f (internet)",
        )

    def nat_counter(self, name: str) -> int:
        """Packets counted by the NAT's named counter `name`."""
        out = _ok(self.nat.run(NFT, "list", "counter", "ip", "rbnat", name), "nft list counter")
        for part in out.replace("\n", " ").split(";"):
            words = part.split()
            if "packets" in words:
                return int(words[words.index("packets") + 1])
        raise RuntimeError(f"no packet count in {out!r}")


def _veth(a: Netns, a_name: str, b: Netns, b_name: str) -> None:
    _ok(
        a.run("ip", "link", "add", a_name, "type", "veth", "peer", "name", b_name, "netns", b.name),
        f"veth {a.name}/{a_name} - {b.name}/{b_name}",
    )


def _addr(ns: Netns, dev: str, cidr: str) -> None:
    _ok(ns.run("ip", "addr", "add", cidr, "dev", dev), f"ip addr add {cidr} ({ns.name})")
    _ok(ns.run("ip", "link", "set", "dev", dev, "up"), f"ip link set {dev} up ({ns.name})")


def _forwarding(ns: Netns) -> None:
    """IPv4 forwarding on in `ns` (/proc/sys/net is the writing thread's namespace's)."""

    def on():
        with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
            f.write("1\n")
        with open("/proc/sys/net/ipv4/ip_forward") as f:
            return f.read().strip()

    assert ns.call(on) == "1", f"ip_forward in {ns.name}"


@contextlib.contextmanager
def topology() -> Iterator[Topology]:
    """The four namespaces, wired and routed, the NAT's rules loaded."""
    made: list[Netns] = []
    try:
        inet = Netns(hosts=(3, 53, 99))
        made.append(inet)
        inet.create()
        front, nat, home = Netns(hosts=()), Netns(hosts=()), Netns(hosts=())
        for ns in (front, nat, home):
            made.append(ns)
            ns.create()
        _veth(inet, "to-front", front, "eth0")
        _veth(inet, "to-nat", nat, "wan")
        _veth(nat, "lan", home, "eth0")
        _addr(inet, "to-front", f"{INET_TO_FRONT}/24")
        _addr(front, "eth0", f"{FRONT_PUBLIC}/24")
        _addr(inet, "to-nat", f"{INET_TO_NAT}/24")
        _addr(nat, "wan", f"{NAT_PUBLIC}/24")
        _addr(nat, "lan", f"{HOME_GW}/24")
        _addr(home, "eth0", f"{HOME_IP}/24")
        _ok(front.run("ip", "route", "add", "default", "via", INET_TO_FRONT), "route (front)")
        _ok(nat.run("ip", "route", "add", "default", "via", INET_TO_NAT), "route (nat)")
        _ok(home.run("ip", "route", "add", "default", "via", HOME_GW), "route (home)")
        _forwarding(inet)
        _forwarding(nat)
        _ok(
            subprocess.run(
                nat.argv(NFT, "-f", "-"), input=NAT_RULES.encode(), capture_output=True, timeout=30
            ),
            "nft -f (nat)",
        )
        yield Topology(inet, front, nat, home)
    finally:
        for ns in reversed(made):
            ns.delete()


# -- probes ---------------------------------------------------------------------------


def tcp_connects(
    ns: Netns, ip: str, port: int, timeout: float = 2.0, source: Optional[str] = None
) -> bool:
    """Whether a TCP connection from `ns` to ip:port is accepted within `timeout`."""

    def probe():
        try:
            with socket.create_connection(
                (ip, port), timeout=timeout, source_address=(source, 0) if source else None
            ):
                return True
        except OSError:
            return False

    return ns.call(probe, timeout=timeout + 5)


def _insecure() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def open_imaps(ns: Netns, ip: str, source: str, timeout: float = 4.0):
    """An IMAP-over-TLS connection from `source` in `ns` to ip:993 and its greeting line,
    or (None, reason) if none comes within `timeout`. The caller closes the socket."""

    def probe():
        raw = None
        try:
            raw = socket.create_connection((ip, 993), timeout=timeout, source_address=(source, 0))
            tls = _insecure().wrap_socket(raw, server_hostname="relay")
            line = b""
            while not line.endswith(b"\n") and len(line) < 1024:
                chunk = tls.recv(1024 - len(line))
                if not chunk:
                    break
                line += chunk
            return tls, line.decode(errors="replace").strip()
        except OSError as e:
            if raw is not None:
                raw.close()
            return None, f"{type(e).__name__}: {e}"

    return ns.call(probe, timeout=timeout * 2 + 5)


def imaps_greets(ns: Netns, ip: str, source: str, timeout: float = 4.0) -> bool:
    """Whether an IMAP client at `source` gets `* OK` from ip:993."""
    sock, line = open_imaps(ns, ip, source, timeout)
    if sock is not None:
        sock.close()
    return sock is not None and line.startswith("* OK")


# -- the front ------------------------------------------------------------------------


class NsFront(LoggedProcess):
    """`relaybox front` in the front namespace; its log (stderr) in <workdir>/front.log."""

    def __init__(self, ns: Netns, workdir: Path, public: str = FRONT_PUBLIC):
        self.ns = ns
        self.workdir = workdir
        self.data = workdir / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.public = public
        self.log_path = workdir / "front.log"
        self.proc: Optional[subprocess.Popen] = None

    def tool(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        return self.ns.run(str(relay_binary()), *args, timeout=timeout)

    def pin(self) -> str:
        """`relaybox front --print-pin`: this front's tunnel certificate."""
        r = self.tool("front", "--data", str(self.data), "--print-pin")
        out = _ok(r, "relaybox front --print-pin")
        pin = r.stdout.decode(errors="replace").strip()
        assert pin.startswith("sha256:"), out
        return pin

    def start(self, *extra: str) -> None:
        """Start it with `extra` arguments (`--box-pin P` or `--pair CODE`) and wait until
        it has bound its ports (its log says so)."""
        before = self.log_text().count("front: tunnel on")
        env = {
            **os.environ,
            "NO_COLOR": "1",
            "RELAYBOX_LOG": os.environ.get("RELAYBOX_LOG", "info"),
        }
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.ns.argv(
                    str(relay_binary()),
                    "front",
                    "--data",
                    str(self.data),
                    "--public",
                    self.public,
                    *extra,
                ),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while self.log_text().count("front: tunnel on") <= before:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"relaybox front exited with {self.proc.returncode}\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"relaybox front did not bind within {START_TIMEOUT} s\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def saved_log_name(self) -> str:
        return f"front-{self.workdir.name}.log"

    def connects(self) -> int:
        """How many times a box has opened the tunnel (the log's count)."""
        return self.log_text().count("front: the box connected")

    # ACTIVE_RELAYS-compatible (conftest shows the log of a failing test).
    @property
    def name(self) -> str:
        return f"front-{self.workdir.name}"

