"""Invite-only sign-up seen by the real Delta Chat core (issue 18 item 2): on a relay
with `signup = invite`, the admin makes an invite on the status page's sign-up page
(behind the admin login); the invite's code creates an account in Delta Chat; without
an invite, and once the invite is used up, Delta Chat shows the relay's refusal in its
configure error (not "authentication failed").

The relay here is IP-only (self-signed), so its invite code is a `dclogin:` link whose
password carries the invite token. Domain relays hand out
`DCACCOUNT:https://<domain>/new?invite=TOKEN`; core 2.65 reads that as an account QR for
the domain and POSTs to the URL as it is (`login_param_from_account_qr`), which cannot
run against a loopback relay (the core checks a `DCACCOUNT:` URL's certificate against
its built-in roots only), so that path is checked in two halves: the core accepts the
QR, and `/new` with the query hands out credentials the core then configures."""

from __future__ import annotations

import html
import http.cookiejar
import re
import urllib.error
import urllib.parse
import urllib.request

import pytest
from deltachat_rpc_client.rpc import JsonRpcError

from relayharness import (
    RelayProcess,
    call_with_timeout,
    insecure_tls,
    online_client,
    parse_json,
    random_password,
)

pytestmark = pytest.mark.timeout(240)

RELAY_PARAMS = {"signup": "invite"}
CONFIGURE_TIMEOUT = 90
ADMIN_PASSWORD = "invite-admin-password-1"

NEED_INVITE = "This relay creates new accounts only with an invite"
USED_UP = "This invite has been used as often as it may"


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class Admin:
    """The admin pages over HTTPS with a cookie jar; redirects are not followed."""

    def __init__(self, relay: RelayProcess):
        self.base = f"https://127.0.0.1:{relay.ports['https']}"
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=insecure_tls()),
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
            NoRedirect(),
        )
        code = (relay.data_dir / "setup-code").read_text().strip()
        page = self.get("/admin/claim")
        status, headers, _ = self.post("/admin/claim/code", {"csrf": csrf(page), "code": code})
        assert headers.get("location") == "/admin/password", (status, headers)
        page = self.get("/admin/password")
        status, _, body = self.post(
            "/admin/password",
            {"csrf": csrf(page), "password": ADMIN_PASSWORD, "confirm": ADMIN_PASSWORD},
        )
        assert status == 303, body

    def request(self, path: str, data: bytes | None):
        req = urllib.request.Request(self.base + path, data=data)
        try:
            with self.opener.open(req, timeout=10) as resp:
                return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read().decode()

    def get(self, path: str) -> str:
        status, _, body = self.request(path, None)
        assert status == 200, f"GET {path}: {status}\n{body}"
        return body

    def post(self, path: str, form: dict):
        return self.request(path, urllib.parse.urlencode(form).encode())

    def make_invite(self, days: int, uses: int) -> str:
        """Make an invite; the link its page shows."""
        page = self.get("/admin/signup")
        status, headers, body = self.post(
            "/admin/signup/invites",
            {"csrf": csrf(page), "days": str(days), "uses": str(uses), "label": "python"},
        )
        location = headers.get("location")
        assert status == 303 and location, body
        return self.invite_link(location)

    def invite_link(self, page_path: str) -> str:
        page = self.get(page_path)
        m = re.search(r'id="invite-link" href="([^"]+)"', page)
        assert m, page
        return html.unescape(m.group(1))


def csrf(page: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    assert m, page
    return m.group(1)


def dclogin_parts(url: str) -> tuple[str, str]:
    """(address, password) of a `dclogin:` link."""
    rest = url.split(":", 1)[1]
    addr, query = rest.split("?", 1)
    return addr, urllib.parse.parse_qs(query)["p"][0]


def configure_error(dc, qr: str, what: str) -> str:
    """Configure from `qr`; it must fail: the error text core gives its user."""
    acc = dc.add_account()
    try:
        with pytest.raises(JsonRpcError) as failed:
            call_with_timeout(
                acc._rpc.add_transport_from_qr.future(acc.id, qr), CONFIGURE_TIMEOUT, what
            )
        assert not acc.is_configured()
        text = str(failed.value)
        print(f"configure {what}: {text}")
        return text
    finally:
        acc.remove()


@pytest.fixture(scope="module")
def admin(relay):
    return Admin(relay)


def test_without_an_invite_the_client_shows_the_refusal(relay, dc):
    error = configure_error(dc, relay.dclogin_url(relay.new_address(), random_password()), "no invite")
    assert NEED_INVITE in error, error
    assert "AUTHENTICATIONFAILED" not in error, error


def test_an_invite_code_creates_an_account_until_used_up(relay, dc, admin):
    link = admin.make_invite(days=7, uses=2)
    assert link.startswith("dclogin:"), link
    addr, password = dclogin_parts(link)
    assert password.startswith("inv."), link
    token = password[4:30]

    # Use 1: Delta Chat scans the invite's code and configures the account.
    client = online_client(dc, link, addr, password)
    assert client.account.get_config("configured_addr") == addr
    assert f"Created address: {addr}" in relay.log_text()

    # Use 2, the `DCACCOUNT:` way: the core reads the QR with the query as an account
    # QR, and `/new?invite=TOKEN` (what it POSTs to) answers with credentials that
    # configure.
    dcaccount = f"DCACCOUNT:https://127.0.0.1:{relay.ports['https']}/new?invite={token}"
    probe = dc.add_account()
    try:
        qr = probe.check_qr(dcaccount)
        assert qr["kind"] == "account", qr
        assert qr["domain"] == "127.0.0.1", qr
    finally:
        probe.remove()
    status, _, body = relay.post_new(f"/new?invite={token}")
    assert status == 200, body
    creds = parse_json(body)
    second = online_client(
        dc,
        relay.dclogin_url(creds["email"], creds["password"]),
        creds["email"],
        creds["password"],
    )
    assert second.account.get_config("configured_addr") == creds["email"]

    # Used up: a fresh code of the same invite is refused with the reason.
    another = admin.invite_link(f"/admin/signup/invite/{page_id(admin)}")
    error = configure_error(dc, another, "used-up invite")
    assert USED_UP in error, error
    assert "AUTHENTICATIONFAILED" not in error, error

    # A forged token reads as one to the user.
    forged = relay.dclogin_url(relay.new_address(), f"inv.{'a' * 26}.secret123")
    error = configure_error(dc, forged, "forged invite")
    assert "This invite is not valid on this relay" in error, error


def page_id(admin: Admin) -> str:
    """The id of the newest invite on the sign-up page (listed newest first)."""
    m = re.search(r'data-invite-id="([0-9a-f]+)"', admin.get("/admin/signup"))
    assert m
    return m.group(1)
