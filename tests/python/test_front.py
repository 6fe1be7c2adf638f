"""A home box behind NAT, reachable only through a front server (issue 20 item 3), with the
real Delta Chat core, in network namespaces the test creates (natharness.py):

    home (the box) --- nat (masquerade, drops every inbound connection and outbound port 25)
        --- internet (DNS, a second relay, the clients) --- front (`relaybox front`)

The home relay's domain has its A and MX records on the front's public address; the box
keeps the tunnel to the front open outwards. Checked:

1. users on the internet side make accounts on the home relay through the front (core's
   own configure, by host name) and chat with a user on the second relay, both ways, and
   with each other; every message arrives exactly once;
2. the front is restarted: the box reconnects by itself and chat works again;
3. the home's uplink is cut for 30 s (the NAT forgets its mappings): the link comes back
   and chat works again (how long that took is printed);
4. the relay sees a client's own address (its per-address limit counts the client, and
   its log names it), not the tunnel's or the front's;
5. refusals: a box with another key is refused by the front; a box that pins another front
   refuses it; a box with `front` but no `front_pin` does not start; nothing is served
   through the front in those cases.

Also: the box notices a dead idle link when the home's public address changes (keepalive);
the home's mail to a peer without `/mxdeliv` goes by SMTP through the front (port 25 is
blocked at home); pairing with a one-time code (`relaybox front --pair`, `relaybox
pair-front`), which also sets up the main test, and a wrong and a replayed code refused.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from fedharness import TestCa
from natharness import (
    FRONT_PUBLIC,
    HOME_IP,
    NAT_PUBLIC,
    PROBE_IP,
    RELAY2_IP,
    TUNNEL_PORT,
    NsFront,
    Topology,
    imaps_greets,
    nat_unavailable,
    open_imaps,
    tcp_connects,
    topology,
)
from netnsharness import DNS_IP, NsDnsmasq, NsRelay, netns_unavailable, ns_deltachat
from relayharness import ACTIVE_RELAYS, accepted_chat, cannot_run, online_client, random_password

# Bounds of the waits (the test fails on what does not happen, not on how long it took).
LINK_TIMEOUT = 60.0  # first link, and the link after the front restarts
CUT = 30.0  # how long the uplink is cut (the scenario, not a wait)
RECOVERY_TIMEOUT = 120.0  # after the uplink is back: the box backs off up to 60 s
MSG_TIMEOUT = 90.0  # per message
# After the home's address changed: noticing the dead link plus the back-off.
DEAD_LINK_TIMEOUT = 90.0
# How long the link idles before the home's address changes (the scenario, not a wait).
IDLE = 10.0
# The home relay's per-address connection limit; the probe of item 4 goes over it.
PER_ADDRESS = 10


def skip_unless_possible() -> None:
    why = netns_unavailable() or nat_unavailable()
    if why:
        cannot_run(why)


def wait_until(cond, timeout: float, what: str, interval: float = 0.3):
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


def tool_out(r) -> str:
    return r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")


def through_front(topo: Topology) -> bool:
    """An IMAP client on the internet gets the home relay's greeting at the front."""
    return imaps_greets(topo.inet, FRONT_PUBLIC, PROBE_IP)


@dataclass
class World:
    topo: Topology
    front: NsFront
    home: NsRelay
    relay2: NsRelay
    dns: NsDnsmasq
    timeline: list[str] = field(default_factory=list)
    t0: float = field(default_factory=time.monotonic)

    def note(self, what: str) -> None:
        line = f"{time.monotonic() - self.t0:6.1f} s  {what}"
        self.timeline.append(line)
        print(line, flush=True)


# The far relay is on a private address of the test's internet: the front may open the
# box's outbound SMTP connections there.
FRONT_FLAGS = ("--outbound-private",)


def pair_front(box: NsRelay, code: str, wait: int = 30):
    """`relaybox pair-front` on the box with `code` (the front on its default tunnel port)."""
    return box.tool(
        "pair-front", "--config", str(box.config_path), "--front", FRONT_PUBLIC,
        "--code", code, "--wait", str(wait), timeout=wait + 30,
    )  # fmt: skip


def keep_paired_keys(box: NsRelay) -> None:
    """Take `front` and `front_pin` from the chatmail.ini that `pair-front` wrote into the
    harness's parameters, so that a later write of the file keeps them."""
    for line in box.config_path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() in ("front", "front_pin"):
            box.params[key.strip()] = value.strip()
    assert box.params.get("front_pin", "").startswith("sha256:"), box.config_path.read_text()
    assert box.params.get("front", "").startswith(FRONT_PUBLIC), box.config_path.read_text()


def home_relay(topo: Topology, workdir: Path, name: str, domain: str, params: dict) -> NsRelay:
    return NsRelay(topo.home, workdir, name, HOME_IP, domain, params)


@contextlib.contextmanager
def world(tmp_path: Path) -> Iterator[World]:
    """The four namespaces; DNS and the second relay on the internet; the home relay
    running, then paired with the front by a one-time code (`relaybox front --pair`,
    `relaybox pair-front`), which brings the link up without a restart."""
    tag = os.getpid() % 100000
    home_domain, relay2_domain = f"home-{tag}.test", f"far-{tag}.test"
    ca = TestCa(tmp_path / "ca")
    started: list = []
    with topology() as topo:
        try:
            common = {"tls_extra_roots": str(ca.cert), "dns_resolver": f"{DNS_IP}:53"}
            crt, key = ca.leaf(home_domain)
            front = NsFront(topo.front, tmp_path / "front")
            home = home_relay(
                topo,
                tmp_path / "home",
                "front-home",
                home_domain,
                {
                    **common,
                    "tls_external_cert_and_key": f"{crt} {key}",
                    "max_connections_per_ip": PER_ADDRESS,
                },
            )
            crt2, key2 = ca.leaf(relay2_domain)
            relay2 = NsRelay(
                topo.inet,
                tmp_path / "relay2",
                "front-far",
                RELAY2_IP,
                relay2_domain,
                {**common, "tls_external_cert_and_key": f"{crt2} {key2}"},
            )
            dns = NsDnsmasq(topo.inet, tmp_path / "dns")
            # The home relay's domain points at the front, and only there.
            dns.add_mail_domain(home_domain, FRONT_PUBLIC)
            dns.add_mail_domain(relay2_domain, RELAY2_IP)
            for r in (home, relay2):
                txt = r.dkim_txt()
                if txt is None:  # the zone file is written at the first start
                    r.start()
                    started.append(r)
                    txt = r.dkim_txt()
                    r.stop()
                assert txt, f"{r.name}: no DKIM record from `relaybox dns` or the zone file"
                dns.add_txt(f"opendkim._domainkey.{r.mail_domain}", txt)
            started.append(dns)
            dns.start()
            for r in (relay2, home):
                started.append(r)
                ACTIVE_RELAYS.append(r)
                r.start()
            code = pairing_code()
            started.append(front)
            ACTIVE_RELAYS.append(front)
            front.start("--pair", code, *FRONT_FLAGS)
            paired = pair_front(home, code)
            assert paired.returncode == 0, tool_out(paired)
            assert "The running relay uses the front now." in tool_out(paired), tool_out(paired)
            keep_paired_keys(home)
            w = World(topo, front, home, relay2, dns)
            wait_until(
                lambda: through_front(topo), LINK_TIMEOUT, "the home relay answers at the front"
            )
            w.note("link up: the home relay answers at the front")
            yield w
        finally:
            for p in reversed(started):
                p.stop()
                if p in ACTIVE_RELAYS:
                    ACTIVE_RELAYS.remove(p)
    for p in started:
        if hasattr(p, "panics"):
            assert not p.panics(), f"{p.name} panicked: {p.panics()[:3]}"


class Chats:
    """Clients a and b on the home relay, c on the second relay; what each one sent."""

    def __init__(self, w: World, dc):
        self.w = w
        clients = []
        for relay in (w.home, w.home, w.relay2):
            addr, password = relay.new_address(), random_password()
            clients.append(online_client(dc, relay.dclogin_url(addr, password), addr, password))
        self.a, self.b, self.c = clients
        self.a_to_c = accepted_chat(self.a, self.c)
        self.c_to_a = accepted_chat(self.c, self.a)
        self.b_to_a = accepted_chat(self.b, self.a)
        # (receiver, sender, text) of every message sent.
        self.sent: list[tuple] = []

    def one(self, sender, chat, receiver, text: str, timeout: float = MSG_TIMEOUT) -> float:
        """Send `text` and wait until `receiver` has it; the time it took."""
        start = time.monotonic()
        chat.send_text(text)
        self.sent.append((receiver, sender, text))
        receiver.events.wait_incoming(timeout, text=text)
        took = time.monotonic() - start
        if took > 5:  # say why (the sender's core warnings), for the report
            sender.events.drain()
            self.w.note(
                f"{text!r} took {took:.1f} s; the sender's core said:\n    "
                + "\n    ".join(sender.events.recent[-6:])
            )
        return took

    def round(self, tag: str) -> None:
        """home → far, far → home, home → home; each must arrive."""
        took = [
            self.one(self.a, self.a_to_c, self.c, f"{tag}: from the home relay to the far one"),
            self.one(self.c, self.c_to_a, self.a, f"{tag}: from the far relay to the home one"),
            self.one(self.b, self.b_to_a, self.a, f"{tag}: between two home users"),
        ]
        self.w.note(f"{tag}: chat works (" + ", ".join(f"{t:.1f} s" for t in took) + ")")

    def each_once(self) -> None:
        """Every message sent is in its receiver's chat with the sender exactly once."""
        for receiver, sender, text in self.sent:
            chat = receiver.account.create_chat(sender.account)
            texts = [m.get_snapshot().text for m in chat.get_messages()]
            assert texts.count(text) == 1, (
                f"{receiver.addr}'s chat with {sender.addr} holds {text!r} "
                f"{texts.count(text)} times:\n{texts}"
            )


@pytest.mark.timeout(420)
def test_a_home_box_behind_nat_serves_through_its_front(tmp_path):
    skip_unless_possible()
    with world(tmp_path) as w:
        topo = w.topo
        # The NAT is what it claims: nothing on the internet reaches the home box, and the
        # home box cannot reach port 25 out; HTTPS out works.
        assert not tcp_connects(topo.inet, NAT_PUBLIC, 993, timeout=1.0), (
            "the NAT let a connection in"
        )
        assert not tcp_connects(topo.inet, HOME_IP, 993, timeout=1.0), (
            "the home network is routable"
        )
        assert topo.nat_counter("inbound") > 0
        assert not tcp_connects(topo.home, RELAY2_IP, 25, timeout=1.0), "port 25 out is not blocked"
        assert topo.nat_counter("blocked25") > 0
        assert tcp_connects(topo.home, RELAY2_IP, 443), "HTTPS out from home does not work"

        # 4. The relay sees the client's own address: PER_ADDRESS connections from the
        # probe's address are served, the next one is over the limit of that address
        # alone, and the log names it.
        held = []
        try:
            for i in range(PER_ADDRESS):
                sock, line = open_imaps(topo.inet, FRONT_PUBLIC, PROBE_IP)
                assert sock is not None and line.startswith("* OK"), f"connection {i + 1}: {line}"
                held.append(sock)
            sock, line = open_imaps(topo.inet, FRONT_PUBLIC, PROBE_IP)
            if sock is not None:
                sock.close()
            assert not line.startswith("* OK"), f"over the per-address limit: {line!r}"
            wait_until(
                lambda: f"connection from {PROBE_IP} refused" in w.home.log_text(),
                10,
                "the relay's log names the client",
            )
            for wrong in ("127.0.0.1", FRONT_PUBLIC, NAT_PUBLIC, "10.20.1.1"):
                assert f"connection from {wrong} refused" not in w.home.log_text(), wrong
            # Another client address is not affected by the probe's limit.
            assert imaps_greets(topo.inet, FRONT_PUBLIC, "10.20.1.1"), "another client is refused"
        finally:
            for s in held:
                s.close()
        w.note(f"the relay counted and logged the client as {PROBE_IP}")

        with ns_deltachat(topo.inet, tmp_path / "dc", "front") as dc:
            # 1. Accounts through the front, chat both ways.
            chats = Chats(w, dc)
            w.note("three accounts configured (two through the front)")
            chats.round("first")

            # 2. The front restarts; the box reconnects by itself.
            connects = w.front.connects()
            w.front.stop()
            assert not through_front(topo), "a stopped front still serves"
            restarted = time.monotonic()
            w.front.start(*FRONT_FLAGS)  # the paired box is kept: no pin, no code
            wait_until(lambda: w.front.connects() > connects, LINK_TIMEOUT, "the box reconnects")
            wait_until(
                lambda: through_front(topo), LINK_TIMEOUT, "the relay answers after the restart"
            )
            w.note(f"front restarted; the box was back after {time.monotonic() - restarted:.1f} s")
            chats.round("after the front's restart")

            # 3. The uplink is cut for CUT seconds; the link must come back.
            connects = w.front.connects()
            topo.uplink(False)
            w.note(f"uplink cut for {CUT:.0f} s")
            time.sleep(CUT)  # the outage itself
            assert not through_front(topo), "the home relay answered while its uplink was cut"
            topo.uplink(True)
            restored = time.monotonic()
            w.note("uplink back")
            try:
                wait_until(
                    lambda: through_front(topo),
                    RECOVERY_TIMEOUT,
                    "the link after the cut",
                    interval=0.5,
                )
            except TimeoutError as e:
                raise AssertionError(
                    f"{e}\nbox's front lines:\n"
                    + "\n".join(l for l in w.home.log_text().splitlines() if "front" in l)[-3000:]
                    + f"\n{w.front.log_tail()}"
                ) from e
            recovery = time.monotonic() - restored
            w.note(
                f"the link was back {recovery:.1f} s after the uplink "
                f"(the box opened {w.front.connects() - connects} new links)"
            )
            chats.round("after the uplink cut")
            chats.each_once()
    print("\n".join(["timeline:", *w.timeline]))


def box_pin_of(relay: NsRelay) -> str:
    r = relay.tool("tunnel-pin", "--config", str(relay.config_path))
    assert r.returncode == 0, tool_out(r)
    pin = r.stdout.decode(errors="replace").strip()
    assert pin.startswith("sha256:"), tool_out(r)
    return pin


@pytest.mark.timeout(240)
def test_the_front_and_the_box_refuse_strangers(tmp_path):
    """No DNS, no second relay, no clients: only who may open the tunnel."""
    skip_unless_possible()
    tag = os.getpid() % 100000
    domain = f"home-{tag}.test"
    ca = TestCa(tmp_path / "ca")
    crt, key = ca.leaf(domain)
    with topology() as topo:
        front = NsFront(topo.front, tmp_path / "front")
        other_front = NsFront(topo.front, tmp_path / "other-front")
        params = {
            "tls_external_cert_and_key": f"{crt} {key}",
            "front": f"{FRONT_PUBLIC}:{TUNNEL_PORT}",
            "front_pin": front.pin(),
        }
        the_box = home_relay(topo, tmp_path / "box", "front-box", domain, params)
        stranger = home_relay(topo, tmp_path / "stranger", "front-stranger", domain, params)
        running: list = []

        def run(p, *args):
            running.append(p)
            ACTIVE_RELAYS.append(p)
            p.start(*args)

        def stop(p):
            p.stop()
            running.remove(p)
            ACTIVE_RELAYS.remove(p)

        try:
            # A box with `front` but no `front_pin` is a configuration error.
            unpinned = home_relay(
                topo, tmp_path / "unpinned", "front-unpinned", domain, {**params, "front_pin": ""}
            )
            r = unpinned.tool("serve", "--config", str(unpinned.config_path), timeout=30)
            assert r.returncode != 0 and "front_pin" in tool_out(r), tool_out(r)

            run(front, "--box-pin", box_pin_of(the_box))
            # A box with another key (its own identity, the right front pin): refused by the
            # front in the handshake; nothing is served.
            run(stranger)
            wait_until(
                lambda: (
                    "refused: unexpected error: not the expected certificate" in front.log_text()
                ),
                LINK_TIMEOUT,
                "the front refuses the stranger",
            )
            assert front.connects() == 0, front.log_tail()
            assert not through_front(topo), "the front served a box it does not pin"
            stop(stranger)

            # The right box, but pinning another front: it refuses the front.
            the_box.params["front_pin"] = other_front.pin()
            run(the_box)
            wait_until(
                lambda: (
                    "no link to" in the_box.log_text()
                    and "not the expected certificate" in the_box.log_text()
                ),
                LINK_TIMEOUT,
                "the box refuses the front",
            )
            assert front.connects() == 0, front.log_tail()
            assert not through_front(topo), "a box served a front it does not pin"
            stop(the_box)

            # Control: the right box with the right pin is served (so the refusals above
            # were the pins', not the set-up's).
            the_box.params["front_pin"] = front.pin()
            run(the_box)
            wait_until(lambda: through_front(topo), LINK_TIMEOUT, "the paired box is served")
            assert front.connects() >= 1
        finally:
            for p in reversed(running):
                p.stop()
                if p in ACTIVE_RELAYS:
                    ACTIVE_RELAYS.remove(p)


@pytest.mark.timeout(240)
def test_the_box_follows_a_new_public_address(tmp_path):
    """The home's public address changes while the link is idle (the router reconnects
    with a new address): the old TCP connection is dead, but neither end hears so until
    one of them sends. The box must notice and open a new link."""
    skip_unless_possible()
    tag = os.getpid() % 100000
    domain = f"home-{tag}.test"
    ca = TestCa(tmp_path / "ca")
    crt, key = ca.leaf(domain)
    with topology() as topo:
        front = NsFront(topo.front, tmp_path / "front")
        box = home_relay(
            topo,
            tmp_path / "box",
            "front-renumbered",
            domain,
            {
                "tls_external_cert_and_key": f"{crt} {key}",
                "front": f"{FRONT_PUBLIC}:{TUNNEL_PORT}",
                "front_pin": front.pin(),
            },
        )
        running = [front, box]
        ACTIVE_RELAYS.extend(running)
        try:
            front.start("--box-pin", box_pin_of(box))
            box.start()
            wait_until(lambda: through_front(topo), LINK_TIMEOUT, "the first link")
            connects = front.connects()
            # The scenario: the link idles (the probe's stream closed, nothing in flight).
            time.sleep(IDLE)
            topo.renumber("10.20.2.3")
            changed = time.monotonic()
            try:
                wait_until(
                    lambda: through_front(topo),
                    DEAD_LINK_TIMEOUT,
                    "the link after the new address",
                    interval=0.5,
                )
            except TimeoutError as e:
                raise AssertionError(
                    f"{e}\nbox's front lines:\n"
                    + "\n".join(l for l in box.log_text().splitlines() if "front:" in l)
                    + f"\n{front.log_tail()}"
                ) from e
            print(
                f"the link was back {time.monotonic() - changed:.1f} s after the address changed "
                f"({front.connects() - connects} new links)"
            )
            assert front.connects() > connects
            assert "the box connected from 10.20.2.3" in front.log_text(), front.log_tail()
        finally:
            for p in reversed(running):
                p.stop()
                ACTIVE_RELAYS.remove(p)


@pytest.mark.timeout(300)
def test_outbound_smtp_goes_through_the_front(tmp_path):
    """The far relay refuses HTTPS from the home's address, so the home relay's mail to it
    must go by SMTP; port 25 out of the home is blocked, so it must go through the front.
    Mail the other way (far → home) keeps working throughout."""
    skip_unless_possible()
    with world(tmp_path) as w:
        w.topo.refuse_https_from_home(RELAY2_IP)
        assert not tcp_connects(w.topo.home, RELAY2_IP, 443, timeout=1.0), (
            "HTTPS from home is not refused"
        )
        with ns_deltachat(w.topo.inet, tmp_path / "dc", "front-smtp") as dc:
            chats = Chats(w, dc)
            took = chats.one(
                chats.c, chats.c_to_a, chats.a, "far to home, by /mxdeliv through the front"
            )
            w.note(f"far → home: {took:.1f} s")
            took = chats.one(
                chats.a, chats.a_to_c, chats.c, "home to far, by SMTP through the front", timeout=60
            )
            w.note(f"home → far by SMTP: {took:.1f} s")
            assert f"front: outbound SMTP for the box to {RELAY2_IP}:25" in w.front.log_text(), (
                w.front.log_tail()
            )
            chats.each_once()


PAIR_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"


def pairing_code() -> str:
    """A code as front-design.md gives it: 16 characters of PAIR_ALPHABET, in fours."""
    import secrets

    raw = "".join(secrets.choice(PAIR_ALPHABET) for _ in range(16))
    return "-".join(raw[i : i + 4] for i in range(0, 16, 4))


@pytest.mark.timeout(240)
def test_pairing_with_a_one_time_code(tmp_path):
    """A running box without a front pairs with a one-time code and is served at once (no
    restart); the same code from another box is refused (replayed), as is a wrong one."""
    skip_unless_possible()
    tag = os.getpid() % 100000
    domain = f"home-{tag}.test"
    ca = TestCa(tmp_path / "ca")
    crt, key = ca.leaf(domain)
    tls = {"tls_external_cert_and_key": f"{crt} {key}"}
    code = pairing_code()
    with topology() as topo:
        front = NsFront(topo.front, tmp_path / "front")
        the_box = home_relay(topo, tmp_path / "box", "front-paired", domain, tls)
        stranger = home_relay(topo, tmp_path / "stranger", "front-replay", domain, tls)
        running = [front, the_box]
        ACTIVE_RELAYS.extend(running)

        try:
            front.start("--pair", code)
            the_box.start()
            assert not through_front(topo), "an unpaired front serves"
            # A wrong code first: refused, and the front is still unpaired.
            wrong = pair_front(the_box, pairing_code(), wait=5)
            assert wrong.returncode == 1, tool_out(wrong)
            assert "refused the pairing code" in tool_out(wrong), tool_out(wrong)
            assert not through_front(topo), "a wrong code paired the front"
            # The right code: paired, the keys written, the running relay served at once.
            r = pair_front(the_box, code)
            assert r.returncode == 0, tool_out(r)
            ini = the_box.config_path.read_text()
            assert f"{FRONT_PUBLIC}" in ini and "front_pin = sha256:" in ini, ini
            wait_until(lambda: through_front(topo), LINK_TIMEOUT, "the paired box is served")
            # The front keeps the paired box's pin (front-design.md: DIR/box.pin).
            kept = (front.data / "box.pin").read_text()
            assert box_pin_of(the_box).removeprefix("sha256:") in kept, kept
            # The same code again, from another box: refused as replayed.
            refusals = front.log_text().count("refused (wrong or used code)")
            replay = pair_front(stranger, code, wait=5)
            assert replay.returncode == 1, tool_out(replay)
            assert "refused the pairing code" in tool_out(replay), tool_out(replay)
            assert front.log_text().count("refused (wrong or used code)") > refusals, (
                front.log_tail()
            )
            assert through_front(topo), "a replayed code displaced the paired box"
            # Also after the front restarts with the same code (the used code is kept on
            # disk): still refused, and the paired box is served again.
            front.stop()
            front.start("--pair", code)
            assert "the pairing code was used already; the paired box is kept" in front.log_text()
            replay = pair_front(stranger, code, wait=5)
            assert replay.returncode == 1, tool_out(replay)
            wait_until(
                lambda: through_front(topo), LINK_TIMEOUT, "the paired box after the restart"
            )
        finally:
            for p in reversed(running):
                p.stop()
                ACTIVE_RELAYS.remove(p)
