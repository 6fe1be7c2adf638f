"""Upstream parity (issue 18 item 1) with the real Delta Chat core 2.65: the core reads
`/shared/comment` and `/shared/vendor/deltachat/appversions` with GETMETADATA when it
configures an account (`imap_server_comment` in get_info, `get_app_version`), and
`DCACCOUNT:<domain>` is an account QR the core understands without asking the relay."""

from __future__ import annotations

import json
import secrets
import string

import pytest

from relayharness import dclogin_client, online_client

pytestmark = pytest.mark.timeout(180)

COMMENT = "Relay of the chess club"
RELAY_PARAMS = {"server_comment": COMMENT}

FILE_DOC = {
    "clients": [
        {
            "clientId": "deltachat",
            "sources": [
                {
                    "sourceId": "fdroid",
                    "versionInteger": 4242,
                    "versionString": "4.2.42",
                    "downloadUrl": "https://example.org/deltachat-4.2.42.apk",
                }
            ],
        }
    ]
}


def app_version(dc, client_id: str, source_id: str):
    return dc.rpc.get_app_version(client_id, source_id)


def test_comment_reaches_the_core(relay, dc):
    a = dclogin_client(dc, relay)
    info = a.account.get_info()
    # get_info shows the value as core's debug form of a string: quoted.
    assert info.get("imap_server_comment") == f'"{COMMENT}"', info


def test_appversions_file_then_bad_file(relay, dc):
    # get_app_version looks at every account of the rpc server: start from none.
    for acc in dc.get_all_accounts():
        acc.remove()
    path = relay.data_dir / "appversions.json"
    # A valid file in the data directory: the core sees its version, and not the
    # built-in's `gplay` source (the file replaced the document).
    path.write_text(json.dumps(FILE_DOC, indent=2))
    dclogin_client(dc, relay)
    got = app_version(dc, "deltachat", "fdroid")
    assert got is not None, "core has no appversions from the relay"
    assert got["versionInteger"] == 4242, got
    assert got["versionString"] == "4.2.42", got
    assert got["downloadUrl"] == "https://example.org/deltachat-4.2.42.apk", got
    assert app_version(dc, "deltachat", "gplay") is None

    # A bad file: the relay logs it and serves the built-in document, which a newly
    # configured account receives.
    path.write_text('{"clients": [{"clientId": "deltachat", "sources": "none"}]}')
    dclogin_client(dc, relay)
    built_in = app_version(dc, "deltachat", "gplay")
    assert built_in is not None, "built-in document not served"
    assert built_in["versionInteger"] > 0, built_in
    assert built_in["downloadUrl"].startswith("https://"), built_in
    assert "appversions file ignored" in relay.log_text()
    assert "clients[0].sources must be an array" in relay.log_text()


def test_dcaccount_domain_is_an_account_qr(dc):
    """The core reads `DCACCOUNT:<domain>` as an account QR for that domain (no HTTP
    request: it invents the credentials when it configures)."""
    acc = dc.add_account()
    try:
        qr = acc.check_qr("DCACCOUNT:chat.example.org")
        assert qr["kind"] == "account", qr
        assert qr["domain"] == "chat.example.org", qr
    finally:
        acc.remove()


def test_core_invented_credentials_create_an_account(relay, dc):
    """What core 2.65 does for `DCACCOUNT:<domain>` (login_param_from_account_qr): 9
    letters/digits at the domain (lower-cased by the core) and a 50-character password
    of letters and digits, no HTTP request; the relay must create that account at the
    first login. The core checks the certificate strictly for `DCACCOUNT:` and trusts
    only its built-in roots, so on loopback the same credentials travel in a
    `dclogin:` link (with `ic=3`) instead of the `DCACCOUNT:` QR itself."""
    alnum = string.ascii_letters + string.digits
    local = "".join(secrets.choice(alnum) for _ in range(9)).lower()
    password = "".join(secrets.choice(alnum) for _ in range(50))
    addr = f"{local}@[127.0.0.1]"
    a = online_client(dc, relay.dclogin_url(addr, password), addr, password)
    assert a.account.get_config("configured_addr") == addr
    assert f"Created address: {addr}" in relay.log_text()
