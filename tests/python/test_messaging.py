"""Messaging through the relay with the real Delta Chat core: 1:1 both ways, a single `.`,
a group of three, a 5 MB attachment, 20 messages in order, and the send → IncomingMsg
latency (printed, not asserted)."""

from __future__ import annotations

import hashlib
import os
import statistics
import time

import pytest

from relayharness import OUT_DIR, accepted_chat, dclogin_client, wait_downloaded

# This module sends far more than the default 60/min with burst 10 (SUB-4); the rate
# limiter has its own tests.
RELAY_PARAMS = {
    "max_user_send_per_minute": 6000,
    "max_user_send_burst_size": 1000,
}

DELIVERY_TIMEOUT = 60


@pytest.fixture(scope="module")
def trio(relay, dc):
    return [dclogin_client(dc, relay) for _ in range(3)]


@pytest.mark.timeout(180)
def test_one_to_one_both_ways(trio):
    a, b, _ = trio
    chat_ab = accepted_chat(a, b)
    chat_ab.send_text("ping")
    msg = b.events.wait_incoming(DELIVERY_TIMEOUT, "ping")
    snap = msg.get_snapshot()
    assert snap.show_padlock, "message should arrive end-to-end encrypted"
    assert msg.get_sender_contact().get_snapshot().address == a.addr

    # b answers in the chat the message arrived in.
    msg.get_snapshot().chat.send_text("pong")
    reply = a.events.wait_incoming(DELIVERY_TIMEOUT, "pong")
    assert reply.get_snapshot().chat_id == chat_ab.id
    assert reply.get_snapshot().show_padlock


@pytest.mark.timeout(180)
def test_single_dot(trio):
    a, b, _ = trio
    chat = accepted_chat(a, b)
    chat.send_text(".")
    assert b.events.wait_incoming(DELIVERY_TIMEOUT, ".").get_snapshot().text == "."
    # Lines that start with dots survive as well (RFC 5321 §4.5.2 transparency).
    text = ".\n..\n.x\n. \nend."
    chat.send_text(text)
    assert b.events.wait_incoming(DELIVERY_TIMEOUT, text).get_snapshot().text == text


@pytest.mark.timeout(240)
def test_group_of_three(trio):
    a, b, c = trio
    group = a.account.create_group("three")
    group.add_contact(a.account.create_contact(b.account), a.account.create_contact(c.account))
    group.send_text("hello group")

    chats = {}
    for peer in (b, c):
        got = peer.events.wait_incoming(DELIVERY_TIMEOUT, "hello group")
        chat = got.get_snapshot().chat
        assert chat.get_basic_snapshot().name == "three"
        assert got.get_snapshot().show_padlock
        chat.accept()  # the group is a contact request at first (client.md §8 gotcha 1)
        members = {ct.get_snapshot().address for ct in chat.get_contacts()}
        assert {a.addr, b.addr, c.addr} <= members, members
        chats[peer.addr] = chat

    # b answers into the group; a and c get it.
    b_chat = chats[b.addr]
    b_chat.send_text("reply from b")
    for peer in (a, c):
        got = peer.events.wait_incoming(DELIVERY_TIMEOUT, "reply from b")
        assert got.get_sender_contact().get_snapshot().address == b.addr
        assert got.get_snapshot().chat.get_basic_snapshot().name == "three"


@pytest.mark.timeout(300)
def test_attachment_5mb(trio, tmp_path):
    a, b, _ = trio
    path = tmp_path / "payload.bin"
    data = os.urandom(5 * 1024 * 1024)
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()

    chat = accepted_chat(a, b)
    chat.send_message(text="5 MB attachment", file=str(path))
    # The IncomingMsg may be core's pre-message (text "<text> [<file> – 5 MiB]").
    msg = b.events.wait_incoming(120, prefix="5 MB attachment")
    snap = wait_downloaded(b, msg, 120)
    assert snap.text == "5 MB attachment", snap.text
    assert snap.file_name == "payload.bin", snap.file_name
    assert snap.file, snap
    received = open(snap.file, "rb").read()
    assert len(received) == len(data)
    assert hashlib.sha256(received).hexdigest() == digest, "attachment bytes differ"


@pytest.mark.timeout(300)
def test_twenty_in_order(trio):
    a, b, _ = trio
    chat = accepted_chat(a, b)
    texts = [f"order {i:02d}" for i in range(20)]
    for t in texts:
        chat.send_text(t)

    got: list[str] = []
    deadline = time.monotonic() + 180
    while len(got) < len(texts):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {len(got)}/20 arrived: {got}"
        try:
            msg = b.events.wait_incoming(remaining)
        except TimeoutError as e:
            raise AssertionError(f"only {len(got)}/20 arrived: {got}\n{e}") from None
        text = msg.get_snapshot().text
        if text.startswith("order "):
            got.append(text)
            last = msg
    assert got == texts, f"arrival order differs: {got}"
    # The chat on b's side shows them in the same order.
    shown = [m.get_snapshot().text for m in last.get_snapshot().chat.get_messages()]
    shown = [t for t in shown if t.startswith("order ")]
    assert shown == texts, shown


@pytest.mark.timeout(180)
def test_receiver_offline(trio):
    """Messages wait on the relay while the receiver is offline and arrive, in order, when
    it comes back (store and forward)."""
    a, b, _ = trio
    chat = accepted_chat(a, b)
    b.account.stop_io()
    try:
        sent = [chat.send_text(f"while offline {i}") for i in range(3)]
        for m in sent:  # the relay accepted each one (core's MsgDelivered)
            a.events.wait(
                "MsgDelivered", DELIVERY_TIMEOUT, lambda ev, m=m: ev.msg_id == m.id, what="sent"
            )
    finally:
        b.account.start_io()
    got = []
    for _ in range(3):
        msg = b.events.wait_incoming(DELIVERY_TIMEOUT, prefix="while offline")
        got.append(msg.get_snapshot().text)
    assert got == [f"while offline {i}" for i in range(3)], got


@pytest.mark.timeout(300)
def test_latency_median(trio, capsys):
    """send → IncomingMsg, one message at a time; prints the median, asserts only arrival.

    Also prints the part after the sender's core reported the SMTP send done
    (SmtpMessageSent → IncomingMsg): relay delivery + IDLE wake-up + the receiver's fetch,
    without the sender core's own queueing."""
    a, b, _ = trio
    chat = accepted_chat(a, b)
    a.events.drain()
    total, after_smtp = [], []
    for i in range(15):
        text = f"latency {i}"
        t0 = time.monotonic()
        chat.send_text(text)
        t_sent = None
        deadline = t0 + DELIVERY_TIMEOUT
        while True:
            assert time.monotonic() < deadline, f"{text!r} not received in {DELIVERY_TIMEOUT} s"
            ev = a.events.next(0.005)
            if ev is not None and ev.kind == "SmtpMessageSent" and t_sent is None:
                t_sent = time.monotonic()
            ev = b.events.next(0.005)
            if ev is not None and ev.kind == "IncomingMsg":
                if b.account.get_message_by_id(ev.msg_id).get_snapshot().text == text:
                    t_in = time.monotonic()
                    break
        total.append(t_in - t0)
        if t_sent is not None:
            after_smtp.append(t_in - t_sent)

    def ms(x):
        return f"{x * 1000:.0f} ms"

    lines = [
        f"send→IncomingMsg over {len(total)} messages: median {ms(statistics.median(total))}, "
        f"min {ms(min(total))}, max {ms(max(total))}",
    ]
    if after_smtp:
        lines.append(
            f"SmtpMessageSent→IncomingMsg over {len(after_smtp)} messages: median "
            f"{ms(statistics.median(after_smtp))}, min {ms(min(after_smtp))}, "
            f"max {ms(max(after_smtp))}"
        )
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "latency.txt").write_text("\n".join(lines) + "\n")
    with capsys.disabled():
        print()
        for line in lines:
            print(f"[relaybox] {line}")
