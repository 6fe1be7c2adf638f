"""The move (issue 17 items 4 and 5) with the real Delta Chat core: two users on one relay
chat continuously — a message a second, alternately — while the relay moves to another
machine and its DNS record changes; every message arrives exactly once, in the same chat.

One network namespace holds the two "machines" (old relay 10.77.0.2, new relay 10.77.0.3,
standard ports) and the private DNS server (dnsmasq, 10.77.0.53) that is the namespace's only
resolver; the Delta Chat core (deltachat-rpc-server) runs in it too and was configured with
dclogin links naming the relay's HOST NAME, so it finds the relay through DNS only. The
procedure is the documented one: `relaybox move --to 10.77.0.3` on the old relay (final
backup; from then on the old relay forwards its own mail to the new machine over HTTPS
/mxdeliv and sends its IMAP clients away), `relaybox restore` of that backup on the new
machine, start it, change the A record, wait until the old relay's forward queue is empty,
stop the old relay.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

import pytest

from fedharness import STANDARD_PORTS, TestCa
from netnsharness import NsDnsmasq, NsRelay, netns, netns_unavailable, ns_deltachat, SUBNET
from relayharness import (
    ACTIVE_RELAYS,
    EventType,
    cannot_run,
    online_client,
    random_password,
)

OLD_IP = f"{SUBNET}.2"
NEW_IP = f"{SUBNET}.3"
PASSPHRASE = "moving the relay, not the mail"

# Messages are sent one a second: BEFORE before the move, DURING while the DNS record
# changes and the old relay forwards, AFTER once the old relay is gone.
BEFORE = 5
DURING = 10
AFTER = 4
SEND_INTERVAL = 1.0
# Bounds of the waits (not timed assertions: the test fails only on lost/doubled mail).
FORWARD_DRAIN_TIMEOUT = 60.0
ARRIVAL_TIMEOUT = 90.0


@dataclass
class Sent:
    text: str
    sender: int  # index into clients
    msg_id: int
    at: float
    delivered_at: Optional[float] = None
    failed: Optional[str] = None


@dataclass
class Inbox:
    """What one client's event pump saw."""

    texts: list[tuple[str, int, float]] = field(default_factory=list)  # (text, chat id, at)
    errors: list[str] = field(default_factory=list)


class Pump(threading.Thread):
    """Reads one client's events until stopped: incoming texts, delivered/failed sends."""

    def __init__(self, index: int, client, sent_by_id: dict, lock: threading.Lock, t0: float):
        super().__init__(daemon=True, name=f"pump{index}")
        self.client = client
        self.index = index
        self.sent_by_id = sent_by_id
        self.lock = lock
        self.t0 = t0
        self.inbox = Inbox()
        self.halt = threading.Event()

    def run(self) -> None:
        acc = self.client.account
        while not self.halt.is_set():
            ev = self.client.events.next(0.2)
            if ev is None:
                continue
            now = time.monotonic() - self.t0
            try:
                if ev.kind == EventType.INCOMING_MSG:
                    snap = acc.get_message_by_id(ev.msg_id).get_snapshot()
                    with self.lock:
                        self.inbox.texts.append((snap.text, snap.chat_id, now))
                elif ev.kind in (EventType.MSG_DELIVERED, EventType.MSG_FAILED):
                    with self.lock:
                        s = self.sent_by_id.get((self.index, ev.msg_id))
                        if s is not None:
                            if ev.kind == EventType.MSG_DELIVERED:
                                s.delivered_at = s.delivered_at or now
                            else:
                                s.failed = f"MSG_FAILED at {now:.1f} s"
                elif ev.kind in (EventType.WARNING, EventType.ERROR):
                    with self.lock:
                        self.inbox.errors.append(f"{now:6.1f} s {ev.kind}: {ev.get('msg', '')}")
            except Exception as e:  # noqa: BLE001 - recorded, the assertions report it
                with self.lock:
                    self.inbox.errors.append(f"{now:6.1f} s pump: {e!r}")


class Sender(threading.Thread):
    """Sends `move-NNN` one a second, alternately from client 0 and client 1, until
    stopped or `limit` messages are out."""

    def __init__(self, chats, sent: list, sent_by_id: dict, lock, t0: float):
        super().__init__(daemon=True, name="sender")
        self.chats = chats
        self.sent = sent
        self.sent_by_id = sent_by_id
        self.lock = lock
        self.t0 = t0
        self.limit = 10_000
        self.halt = threading.Event()
        self.error: Optional[BaseException] = None

    def count(self) -> int:
        with self.lock:
            return len(self.sent)

    def run(self) -> None:
        i = 0
        next_at = time.monotonic()
        try:
            while not self.halt.is_set() and i < self.limit:
                who = i % 2
                text = f"move-{i:03d} from {who}"
                msg = self.chats[who].send_text(text)
                with self.lock:
                    s = Sent(text, who, msg.id, time.monotonic() - self.t0)
                    self.sent.append(s)
                    self.sent_by_id[(who, msg.id)] = s
                i += 1
                next_at += SEND_INTERVAL
                self.halt.wait(max(0.0, next_at - time.monotonic()))
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e


def wait_until(cond, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


def read_params(path) -> dict:
    params = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")) or "=" not in line:
            continue
        k, v = line.split("=", 1)
        params[k.strip()] = v.strip()
    return params


def tool_ok(r, what: str) -> str:
    out = r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")
    assert r.returncode == 0, f"{what} exited with {r.returncode}:\n{out}"
    return out


def queue_has(relay: NsRelay, domain: str) -> bool:
    """Whether `relaybox queue` on `relay` lists mail waiting for `domain`."""
    out = tool_ok(relay.tool("queue", "--config", str(relay.config_path)), "relaybox queue")
    return any(line.split()[:1] == [domain] for line in out.splitlines())


@pytest.mark.timeout(240)
def test_move_keeps_every_message(tmp_path):
    why = netns_unavailable()
    if why:
        cannot_run(why)
    domain = f"mv-{os.getpid() % 100000}.test"
    passfile = tmp_path / "passphrase"
    passfile.write_text(PASSPHRASE + "\n")
    backup = tmp_path / "move.backup"
    ca = TestCa(tmp_path / "ca")
    crt, key = ca.leaf(domain)
    timeline: list[str] = []
    t0 = time.monotonic()

    def note(what: str) -> None:
        timeline.append(f"{time.monotonic() - t0:6.1f} s  {what}")

    with netns() as ns:
        params = {
            "tls_external_cert_and_key": f"{crt} {key}",
            "tls_extra_roots": str(ca.cert),
            "dns_resolver": f"{SUBNET}.53:53",
        }
        old = NsRelay(ns, tmp_path / "old", "move-old", OLD_IP, domain, params)
        new = NsRelay(ns, tmp_path / "new", "move-new", NEW_IP, domain, params)
        dns = NsDnsmasq(ns, tmp_path / "dns")
        dns.add_mail_domain(domain, OLD_IP)
        ACTIVE_RELAYS.extend([old, new])
        pumps: list[Pump] = []
        sender: Optional[Sender] = None
        try:
            txt = old.dkim_txt()
            if txt is None:  # the zone file is written at the first start
                old.start()
                txt = old.dkim_txt()
            assert txt, "no DKIM record from `relaybox dns` or the zone file"
            dns.add_txt(f"opendkim._domainkey.{domain}", txt)
            dns.start()
            if not old.alive():
                old.start()
            note("old relay and DNS up")

            with ns_deltachat(ns, tmp_path / "dc", "move") as dc:
                clients = []
                for _ in range(2):
                    addr, password = old.new_address(), random_password()
                    clients.append(
                        online_client(dc, old.dclogin_url(addr, password), addr, password)
                    )
                a, b = clients
                b.account.create_chat(a.account)
                chats = [a.account.create_chat(b.account), b.account.create_chat(a.account)]
                chat_ids = [c.id for c in chats]
                note("clients configured through the host name")

                sent: list[Sent] = []
                sent_by_id: dict = {}
                lock = threading.Lock()
                pumps = [Pump(i, c, sent_by_id, lock, t0) for i, c in enumerate(clients)]
                for p in pumps:
                    p.start()
                sender = Sender(chats, sent, sent_by_id, lock, t0)
                sender.start()

                def received(i: int) -> list[str]:
                    with lock:
                        return [t for t, _, _ in pumps[i].inbox.texts]

                wait_until(lambda: sender.count() >= BEFORE, BEFORE * 3 + 10, "first messages")
                # Chat works through the old relay before anything moves.
                wait_until(lambda: received(1) and received(0), 60, "first messages arrive")
                note(f"{sender.count()} sent; moving")

                moved = old.tool(
                    "move", "--config", str(old.config_path), "--to", NEW_IP,
                    "--out", str(backup), "--passphrase-file", str(passfile),
                )  # fmt: skip
                tool_ok(moved, "relaybox move")
                note("relaybox move done (old relay forwards from now on)")

                restored = new.tool(
                    "restore", "--config", str(new.config_path),
                    "--passphrase-file", str(passfile), str(backup),
                )  # fmt: skip
                tool_ok(restored, "relaybox restore")
                # Everything but data_dir comes from the backup; the listen addresses are
                # this machine's.
                restored_params = read_params(new.config_path)
                assert restored_params.get("mail_domain") == domain, restored_params
                assert restored_params.get("data_dir") == str(new.data_dir), restored_params
                assert "moved_to" not in restored_params, restored_params
                assert new.move_listen(OLD_IP) >= len(STANDARD_PORTS), new.config_path.read_text()
                note("restored on the new machine")
                new.start(write_config=False)
                note("new relay up")
                dns.set_a(domain, NEW_IP)
                note(f"DNS: {domain} A {NEW_IP}")

                wait_until(
                    lambda: sender.count() >= BEFORE + DURING, DURING * 3 + 10, "messages during the move"
                )
                wait_until(
                    lambda: not queue_has(old, domain),
                    FORWARD_DRAIN_TIMEOUT,
                    "old relay's forward queue empty",
                    interval=0.5,
                )
                note("old relay's forward queue empty; stopping it")
                status = old.stop()
                assert status == 0, f"old relay exited with {status}\n{old.log_tail()}"
                note("old relay stopped")

                target = sender.count() + AFTER
                wait_until(lambda: sender.count() >= target, AFTER * 3 + 10, "messages after")
                sender.halt.set()
                sender.join(timeout=30)
                assert sender.error is None, f"sending failed: {sender.error!r}"
                note(f"sending stopped after {len(sent)} messages")

                def expected(i: int) -> list[str]:
                    """What client i must receive: what the other one sent."""
                    with lock:
                        return [s.text for s in sent if s.sender != i]

                def all_arrived() -> bool:
                    return all(set(expected(i)) <= set(received(i)) for i in (0, 1))

                try:
                    wait_until(all_arrived, ARRIVAL_TIMEOUT, "every message at its receiver")
                except TimeoutError:
                    pass  # the assertions below say which are missing
                note("arrival wait over")
                # Nothing is left in flight that could still bring a doubled copy: the old
                # relay is stopped and the new one holds no mail for its own domain.
                wait_until(
                    lambda: not queue_has(new, domain),
                    FORWARD_DRAIN_TIMEOUT,
                    "new relay's queue for its own domain empty",
                    interval=0.5,
                )
                for p in pumps:
                    p.halt.set()
                for p in pumps:
                    p.join(timeout=10)

                report = [
                    "timeline:",
                    *timeline,
                    "sent (text, sent at, delivered to the relay at):",
                ]
                report += [
                    f"  {s.text}  {s.at:6.1f} s  "
                    + (f"{s.delivered_at:6.1f} s" if s.delivered_at else "not delivered")
                    + (f"  {s.failed}" if s.failed else "")
                    for s in sent
                ]
                for i, p in enumerate(pumps):
                    report.append(f"client {i} received:")
                    report += [f"  {t}  chat {c}  {at:6.1f} s" for t, c, at in p.inbox.texts]
                    report.append(f"client {i} warnings/errors:")
                    report += ["  " + e for e in p.inbox.errors[-40:]]
                summary = "\n".join(report)
                print(summary)

                for i in (0, 1):
                    got = received(i)
                    want = expected(i)
                    lost = [t for t in want if t not in got]
                    doubled = sorted({t for t in got if got.count(t) > 1})
                    strangers = sorted(set(got) - set(want))
                    assert not lost, f"client {i} never received {lost}\n{summary}"
                    assert not doubled, f"client {i} received twice: {doubled}\n{summary}"
                    assert not strangers, f"client {i} received unexpected {strangers}\n{summary}"
                    # Same chat as before the move: the chat with the other client.
                    other_chats = {c for t, c, _ in pumps[i].inbox.texts if c != chat_ids[i]}
                    assert not other_chats, f"client {i}: messages in chats {other_chats}\n{summary}"
                    # And the chat itself holds each text once (core's own view).
                    texts = [
                        m.get_snapshot().text for m in chats[i].get_messages()
                    ]
                    for t in want + [s.text for s in sent if s.sender == i]:
                        assert texts.count(t) == 1, f"client {i}'s chat holds {t!r} {texts.count(t)} times"
                failed = [s.text for s in sent if s.failed]
                assert not failed, f"sends failed: {failed}\n{summary}"
        finally:
            if sender is not None:
                sender.halt.set()
            for p in pumps:
                p.halt.set()
            for r in (old, new):
                r.stop()
                if r in ACTIVE_RELAYS:
                    ACTIVE_RELAYS.remove(r)
            dns.stop()
    for r in (old, new):
        assert not r.panics(), f"relay {r.name} panicked: {r.panics()[:3]}"
