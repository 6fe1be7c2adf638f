"""Federation with the real Delta Chat core (issue 3): accounts on two relays that run as
two hosts (own loopback addresses, standard ports) chat both ways and complete a
Secure-Join QR handshake (verified contact) — once with two domain relays found through
a private dnsmasq (A, MX, DKIM TXT; test-CA certificates), once with two IP-only relays
(`user@[127.a.b.2]`, MODE-1) without DNS.

Accounts are made with dclogin links that point IMAP/SMTP at the relay's IP with
`ic=3` (spec/client.md §2, §8)."""

from __future__ import annotations

import pytest

from fedharness import domain_relays, ip_only_relays
from relayharness import EventType, accepted_chat, online_client, random_password

DELIVERY_TIMEOUT = 90
SECUREJOIN_TIMEOUT = 120


def client_on(dc, relay):
    addr, password = relay.new_address(), random_password()
    return online_client(dc, relay.dclogin_url(addr, password), addr, password)


@pytest.fixture(scope="module")
def domain_pair(tmp_path_factory):
    with domain_relays(tmp_path_factory.mktemp("fed-domain"), "federation-domain") as relays:
        yield relays
        for r in relays:
            assert not r.panics(), f"relay {r.name} panicked: {r.panics()[:3]}"


@pytest.fixture(scope="module")
def ip_pair(tmp_path_factory):
    with ip_only_relays(tmp_path_factory.mktemp("fed-ip"), "federation-ip") as relays:
        yield relays
        for r in relays:
            assert not r.panics(), f"relay {r.name} panicked: {r.panics()[:3]}"


def chat_both_ways(dc, r1, r2):
    a = client_on(dc, r1)
    b = client_on(dc, r2)
    chat = accepted_chat(a, b)
    chat.send_text("ping across relays")
    msg = b.events.wait_incoming(DELIVERY_TIMEOUT, "ping across relays")
    snap = msg.get_snapshot()
    assert snap.show_padlock, "message should arrive end-to-end encrypted"
    assert msg.get_sender_contact().get_snapshot().address == a.addr
    snap.chat.send_text("pong across relays")
    reply = a.events.wait_incoming(DELIVERY_TIMEOUT, "pong across relays")
    assert reply.get_snapshot().chat_id == chat.id
    assert reply.get_snapshot().show_padlock


def securejoin(dc, r1, r2):
    """Bob (relay 2) scans Alice's (relay 1) setup-contact QR code; both sides finish
    (progress 1000) and each holds the other as a key contact with encryption."""
    alice = client_on(dc, r1)
    bob = client_on(dc, r2)
    qr = alice.account.get_qr_code()
    bob.account.secure_join(qr)
    bob.events.wait(
        EventType.SECUREJOIN_JOINER_PROGRESS,
        SECUREJOIN_TIMEOUT,
        lambda ev: ev.progress == 1000,
        what="joiner progress 1000",
    )
    alice.events.wait(
        EventType.SECUREJOIN_INVITER_PROGRESS,
        SECUREJOIN_TIMEOUT,
        lambda ev: ev.progress == 1000,
        what="inviter progress 1000",
    )
    # Core 2.65 exposes no "verified" flag on contacts any more (ContactObject has
    # isKeyContact and e2eeAvail); progress 1000 on both sides is the handshake's own
    # success signal (vc-contact-confirm received and the key marked verified). Both
    # sides must also hold the other as a key contact with encryption available.
    for me, peer in ((bob, alice), (alice, bob)):
        contact = me.account.get_contact_by_addr(peer.addr)
        assert contact is not None, f"{me.addr} has no contact for {peer.addr}"
        snap = contact.get_snapshot()
        assert snap.is_key_contact and snap.e2ee_avail, f"{me.addr} sees {peer.addr}: {dict(snap)}"
    # And the verified chat works.
    chat = alice.account.create_chat(bob.account)
    chat.send_text("verified hello")
    got = bob.events.wait_incoming(DELIVERY_TIMEOUT, "verified hello")
    assert got.get_snapshot().show_padlock


@pytest.mark.timeout(300)
def test_domain_relays_chat_both_ways(dc, domain_pair):
    r1, r2 = domain_pair
    chat_both_ways(dc, r1, r2)


@pytest.mark.timeout(300)
def test_domain_relays_securejoin(dc, domain_pair):
    r1, r2 = domain_pair
    securejoin(dc, r1, r2)


@pytest.mark.timeout(300)
def test_ip_only_relays_chat_both_ways(dc, ip_pair):
    r1, r2 = ip_pair
    chat_both_ways(dc, r1, r2)


@pytest.mark.timeout(300)
def test_ip_only_relays_securejoin(dc, ip_pair):
    r1, r2 = ip_pair
    securejoin(dc, r1, r2)
