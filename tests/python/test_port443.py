"""The port-443 multiplexer and the web site with real clients (spec/relay.md PORT-2,
PORT-3, §17, NEW-6).

The relay of this module listens for IMAP and submission ONLY on the HTTPS port (the
143/993/587/465 listeners are disabled), so a Delta Chat account that works there can only
have used the ALPN multiplexer. A browser-style HTTPS request to the same port gets the
index page. A second relay in domain mode (external certificate, so no ACME) serves the
invite QR code PNG, which is decoded here, and the MTA-STS policy.
"""

from __future__ import annotations

import http.client
import re
import shutil
import socket
import ssl
import struct
import urllib.parse
import zlib

import pytest

from relayharness import (
    ACTIVE_RELAYS,
    RelayProcess,
    accepted_chat,
    online_client,
    random_password,
)

pytestmark = pytest.mark.timeout(240)

DELIVERY_TIMEOUT = 60
# Services that only the multiplexer may carry in this module.
DISABLED = ("imap", "imaps", "submission", "submissions")
DOMAIN = "chat.example.org"


def start_relay(workdir, name: str, params: dict, disabled=()) -> RelayProcess:
    proc = RelayProcess(workdir, name, params)
    for key in disabled:
        del proc.ports[key]
        proc.params[f"{key}_listen"] = ""
    proc.start()
    ACTIVE_RELAYS.append(proc)
    return proc


def stop_relay(proc: RelayProcess) -> None:
    ACTIVE_RELAYS.remove(proc)
    proc.stop(check=True)


@pytest.fixture(scope="module")
def relay443(tmp_path_factory):
    proc = start_relay(tmp_path_factory.mktemp("relay-port443"), "port443", {}, DISABLED)
    try:
        yield proc
    finally:
        stop_relay(proc)


def insecure_context(alpn: list[str] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def https_get(port: int, path: str, host: str, alpn: list[str] | None = None):
    """GET https://127.0.0.1:<port><path> with `Host: host`; (status, headers, body)."""
    ctx = insecure_context(alpn)
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ctx)
    try:
        conn.request("GET", path, headers={"Host": host, "User-Agent": "Mozilla/5.0"})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def first_line(port: int, alpn: list[str]) -> tuple[str, str | None]:
    """Connect with TLS offering `alpn`; the server's first line and the selected ALPN."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with insecure_context(alpn).wrap_socket(raw) as tls:
            data = b""
            while not data.endswith(b"\n") and len(data) < 1000:
                chunk = tls.recv(1)
                if not chunk:
                    break
                data += chunk
            return data.decode(), tls.selected_alpn_protocol()


def test_no_mail_ports_but_443(relay443):
    for key in DISABLED:
        assert key not in relay443.ports
    # PORT-2: smtp first, then imap; PORT-3: no protocol selected, handshake fine.
    line, selected = first_line(relay443.ports["https"], ["imap"])
    assert line.startswith("* OK"), line
    assert selected is None
    line, selected = first_line(relay443.ports["https"], ["imap", "smtp"])
    assert line.startswith("220 "), line
    assert selected is None


def test_chat_with_imap_and_smtp_on_443(relay443, dc):
    """Delta Chat with IMAP and SMTP both on the HTTPS port: core offers ALPN `imap` and
    `smtp` there. Both accounts use only that port."""
    https = relay443.ports["https"]

    def client():
        addr, password = relay443.new_address(), random_password()
        p = urllib.parse.quote(password, safe="")
        qr = (
            f"dclogin:{addr}?p={p}&v=1&ih=127.0.0.1&ip={https}&is=ssl"
            f"&sh=127.0.0.1&sp={https}&ss=ssl&ic=3"
        )
        return online_client(dc, qr, addr, password)

    a, b = client(), client()
    accepted_chat(a, b).send_text("hello via 443")
    msg = b.events.wait_incoming(DELIVERY_TIMEOUT, "hello via 443")
    assert msg.get_snapshot().text == "hello via 443"
    accepted_chat(b, a).send_text("reply via 443")
    a.events.wait_incoming(DELIVERY_TIMEOUT, "reply via 443")
    # The relay has no other IMAP or submission listener (test_no_mail_ports_but_443), so
    # both directions went through the multiplexer.


def test_index_page_on_the_same_port(relay443):
    https = relay443.ports["https"]
    for alpn in (["h2", "http/1.1"], None):
        status, headers, body = https_get(https, "/", "127.0.0.1", alpn)
        assert status == 200, (status, body[:300])
        assert headers["content-type"] == "text/html; charset=utf-8"
        assert headers["cache-control"] == "no-store"
        assert "server" not in headers, headers
        page = body.decode()
        assert '<meta name="viewport"' in page
        assert "<script" not in page.lower()
        # NEW-6, IP-only mode: a dclogin: link with fresh credentials and its QR code.
        link = re.search(r'href="(dclogin:[^"]+)"', page)
        assert link, page
        url = link.group(1).replace("&#38;", "&")
        assert re.match(r"dclogin:[a-z0-9]{9}@\[127\.0\.0\.1\]\?p=", url), url
        assert "&ih=127.0.0.1&sh=127.0.0.1" in url and url.endswith("&ic=3"), url
        assert "<svg" in page
    for path, want in (("/info.html", "20 days"), ("/privacy.html", "Privacy policy")):
        status, _, body = https_get(https, path, "127.0.0.1")
        assert status == 200 and want in body.decode(), (path, body[:300])


def decode_png(data: bytes) -> list[list[bool]]:
    """Rows of dark pixels of a 1-bit greyscale PNG; checks signature and chunk CRCs."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    kinds = []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"CRC of {kind!r}"
        kinds.append(kind)
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND", kinds
    width, height, depth, color, _, _, interlace = header
    assert (depth, color, interlace) == (1, 0, 0), header
    raw = zlib.decompress(idat)
    stride = (width + 7) // 8
    assert len(raw) == height * (stride + 1)
    rows = []
    for y in range(height):
        line = raw[y * (stride + 1) : (y + 1) * (stride + 1)]
        assert line[0] == 0, "filter type None"
        rows.append([not (line[1 + x // 8] >> (7 - x % 8)) & 1 for x in range(width)])
    return rows


def test_domain_mode_png_and_mta_sts(relay443, tmp_path):
    # An external certificate (the first relay's self-signed one) keeps this relay out of
    # ACME mode while it is not self-signed (TLS-1).
    tls_dir = relay443.data_dir / "tls"
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(tls_dir / "cert.pem", cert)
    shutil.copy(tls_dir / "key.pem", key)
    params = {"mail_domain": DOMAIN, "tls_external_cert_and_key": f"{cert} {key}"}
    proc = start_relay(tmp_path / "relay", "port443-domain", params)
    try:
        https = proc.ports["https"]
        status, headers, body = https_get(https, "/", DOMAIN)
        assert status == 200
        assert f'href="DCACCOUNT:https://{DOMAIN}/new"' in body.decode()

        status, headers, body = https_get(https, f"/qr-chatmail-invite-{DOMAIN}.png", DOMAIN)
        assert status == 200 and headers["content-type"] == "image/png"
        rows = decode_png(body)
        size = len(rows)
        assert size == len(rows[0]) and size % 8 == 0, size
        modules = size // 8
        # Version 2 or more (DCACCOUNT link), 4 quiet modules on each side.
        assert (modules - 8 - 17) % 4 == 0 and modules >= 33, modules

        def module(x, y):
            return rows[y * 8 + 4][x * 8 + 4]

        assert not any(module(x, 0) for x in range(modules)), "quiet zone"
        # The three finder patterns: a dark 7x7 ring with a dark 3x3 centre.
        n = modules - 8
        for ox, oy in ((4, 4), (4 + n - 7, 4), (4, 4 + n - 7)):
            for i in range(7):
                for edge in ((ox + i, oy), (ox + i, oy + 6), (ox, oy + i), (ox + 6, oy + i)):
                    assert module(*edge), (ox, oy, edge)
            assert not module(ox + 1, oy + 1)
            assert all(module(ox + 2 + i, oy + 2 + j) for i in range(3) for j in range(3))

        status, headers, body = https_get(https, "/.well-known/mta-sts.txt", f"mta-sts.{DOMAIN}")
        assert status == 200, status
        assert headers["content-type"].startswith("text/plain")
        assert body.decode() == (
            f"version: STSv1\r\nmode: enforce\r\nmx: {DOMAIN}\r\nmax_age: 2419200\r\n"
        )
        status, _, _ = https_get(https, "/.well-known/mta-sts.txt", DOMAIN)
        assert status == 404

        status, headers, _ = https_get(https, "/privacy.html", f"www.{DOMAIN}")
        assert status == 301
        assert headers["location"] == f"https://{DOMAIN}:{https}/privacy.html"
    finally:
        stop_relay(proc)
