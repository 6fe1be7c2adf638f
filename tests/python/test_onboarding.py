"""Account creation with the real Delta Chat core: a `dclogin:` link with a fresh address
(auto-creation at first login, ACC-5/ACC-6) and `POST /new` (NEW-1..3, IP-only mode)."""

from __future__ import annotations

import re
import string
import urllib.parse

import pytest
from deltachat_rpc_client.rpc import JsonRpcError

from relayharness import (
    accepted_chat,
    call_with_timeout,
    dclogin_client,
    online_client,
    parse_json,
    random_password,
)

pytestmark = pytest.mark.timeout(180)

DELIVERY_TIMEOUT = 60


def test_dclogin_account(relay, dc):
    a = dclogin_client(dc, relay)
    assert re.fullmatch(r"[a-z0-9]{9}@\[127\.0\.0\.1\]", a.addr)
    assert a.account.get_config("configured_addr") == a.addr

    # A second device with the same credentials logs in (the hash stored at creation
    # verifies) ...
    second = dc.add_account()
    qr = relay.dclogin_url(a.addr, a.password)
    call_with_timeout(second._rpc.add_transport_from_qr.future(second.id, qr), 60, "2nd device")
    assert second.is_configured()
    second.remove()

    # ... and a wrong password is refused.
    wrong = dc.add_account()
    qr = relay.dclogin_url(a.addr, a.password + "x")
    with pytest.raises(JsonRpcError):
        call_with_timeout(wrong._rpc.add_transport_from_qr.future(wrong.id, qr), 60, "wrong pw")
    assert not wrong.is_configured()
    wrong.remove()


def parse_dclogin(url: str) -> tuple[str, dict[str, str]]:
    assert url.lower().startswith("dclogin:"), url
    rest = url[len("dclogin:") :]
    if rest.startswith("//"):
        rest = rest[2:]
    addr_part, _, query = rest.partition("?")
    addr = urllib.parse.unquote(addr_part.rstrip("/"))
    params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
    return addr, params


def test_new_account(relay, dc):
    status, headers, body = relay.post_new("/new")
    assert status == 200, (status, body[:500])
    ctype = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
    assert ctype.startswith("application/json"), ctype
    data = parse_json(body)
    print(f"POST /new returned keys {sorted(data)}; dclogin_url={data.get('dclogin_url')!r}")

    # NEW-1/NEW-2: 9-char [a-z0-9] local part, 12-char password (min 9 + 3).
    email, password = data["email"], data["password"]
    assert re.fullmatch(r"[a-z0-9]{9}@\[127\.0\.0\.1\]", email), email
    assert len(password) == 12, password
    allowed = set(string.ascii_letters + string.digits + string.punctuation)
    assert set(password) <= allowed, password

    # NEW-3: self-signed IP-only mode adds a dclogin_url with ih/sh = the IP and ic=3.
    url = data["dclogin_url"]
    addr, params = parse_dclogin(url)
    assert addr == email, (addr, email)
    assert params.get("p") == password, params
    assert params.get("v") == "1", params
    assert params.get("ih") == "127.0.0.1", params
    assert params.get("sh") == "127.0.0.1", params
    assert params.get("ic") == "3", params

    # The relay names no ports (it assumes 993/465) unless it does; point the client
    # at this relay's unprivileged TLS ports for what it left out.
    extra = {}
    if "ip" not in params:
        extra.update(ip=str(relay.ports["imaps"]), **{"is": "ssl"})
    if "sp" not in params:
        extra.update(sp=str(relay.ports["submissions"]), ss="ssl")
    qr = url + ("&" + urllib.parse.urlencode(extra) if extra else "")

    fresh = online_client(dc, qr, email, password)
    assert fresh.account.get_config("configured_addr") == email

    # Another POST gives another account.
    status2, _, body2 = relay.post_new("/new")
    assert status2 == 200, (status2, body2[:500])
    assert parse_json(body2)["email"] != email

    # The account works both ways with a dclogin account.
    other = dclogin_client(dc, relay)
    accepted_chat(fresh, other).send_text("hello from /new")
    got = other.events.wait_incoming(DELIVERY_TIMEOUT, "hello from /new")
    assert got.get_snapshot().show_padlock
    accepted_chat(other, fresh).send_text("hello to /new")
    got = fresh.events.wait_incoming(DELIVERY_TIMEOUT, "hello to /new")
    assert got.get_snapshot().show_padlock


def test_starttls_account(relay, dc):
    """Core on the STARTTLS ports (143/587 equivalents): it offers ALPN `imap`/`smtp`
    inside STARTTLS, which must not fail the handshake (PORT-3)."""
    addr, password = relay.new_address(), random_password()
    qr = relay.dclogin_url(addr, password, starttls=True)
    s = online_client(dc, qr, addr, password)
    transport = s.account.list_transports()[0]
    assert (transport["imapSecurity"], transport["smtpSecurity"]) == ("starttls", "starttls")
    assert transport["imapPort"] == relay.ports["imap"], transport
    other = dclogin_client(dc, relay)
    accepted_chat(s, other).send_text("via STARTTLS")
    other.events.wait_incoming(DELIVERY_TIMEOUT, "via STARTTLS")
    accepted_chat(other, s).send_text("to STARTTLS")
    s.events.wait_incoming(DELIVERY_TIMEOUT, "to STARTTLS")


def test_https_port_alpn(relay, dc):
    """Core with IMAP and SMTP both on the HTTPS port (443 equivalent): it offers ALPN
    `imap` resp. `smtp` there, and the relay's multiplexer must route by it (PORT-2;
    autoconfig lists 443 for both)."""
    addr, password = relay.new_address(), random_password()
    https = relay.ports["https"]
    qr = (
        f"dclogin:{addr}?p={password}&v=1&ih=127.0.0.1&ip={https}&is=ssl"
        f"&sh=127.0.0.1&sp={https}&ss=ssl&ic=3"
    )
    s = online_client(dc, qr, addr, password)
    other = dclogin_client(dc, relay)
    accepted_chat(s, other).send_text("via 443")
    other.events.wait_incoming(DELIVERY_TIMEOUT, "via 443")
    accepted_chat(other, s).send_text("to 443")
    s.events.wait_incoming(DELIVERY_TIMEOUT, "to 443")
