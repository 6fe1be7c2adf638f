"""A refused sign-up, seen by the real Delta Chat core (issue 16 item 2): configuring a
new address on a relay that does not create accounts (the `<data_dir>/nocreate` kill
switch, CFG-6) or has paused creation (a system limit, ACC-5.6: here
`min_free_disk_space` far above any disk) fails with the relay's reason in the
configure error the user sees, not "Authentication failed"; a wrong password for an
existing address still reads as one, and the right one still configures."""

from __future__ import annotations

import pytest
from deltachat_rpc_client.rpc import JsonRpcError

from relayharness import (
    RelayProcess,
    call_with_timeout,
    dclogin_client,
    random_password,
    running,
)

pytestmark = pytest.mark.timeout(180)

CONFIGURE_TIMEOUT = 90

CLOSED_TEXT = "This relay does not create new accounts"
PAUSED_TEXT = "New accounts are paused on this relay"


def configure_error(dc, relay: RelayProcess, addr: str, password: str) -> str:
    """Configure `addr` from a dclogin: link; it must fail: the error text core gives
    (what Delta Chat shows the user)."""
    acc = dc.add_account()
    try:
        qr = relay.dclogin_url(addr, password)
        with pytest.raises(JsonRpcError) as failed:
            call_with_timeout(
                acc._rpc.add_transport_from_qr.future(acc.id, qr), CONFIGURE_TIMEOUT, addr
            )
        assert not acc.is_configured()
        text = str(failed.value)
        print(f"configure {addr}: {text}")
        return text
    finally:
        acc.remove()


def test_closed_sign_up_says_so(relay, dc):
    known = dclogin_client(dc, relay)
    flag = relay.data_dir / "nocreate"
    flag.write_text("")
    try:
        error = configure_error(dc, relay, relay.new_address(), random_password())
        assert CLOSED_TEXT in error, error
        assert "AUTHENTICATIONFAILED" not in error, error
        assert "nocreate" not in error, error

        # An existing address with a wrong password: still a wrong password ...
        error = configure_error(dc, relay, known.addr, known.password + "x")
        assert "AUTHENTICATIONFAILED" in error, error
        assert CLOSED_TEXT not in error, error

        # ... and with the right one a second device still configures.
        second = dc.add_account()
        qr = relay.dclogin_url(known.addr, known.password)
        call_with_timeout(
            second._rpc.add_transport_from_qr.future(second.id, qr), CONFIGURE_TIMEOUT, "2nd"
        )
        assert second.is_configured()
        second.remove()
    finally:
        flag.unlink()


@pytest.fixture(scope="module")
def paused_relay(tmp_path_factory):
    proc = RelayProcess(
        tmp_path_factory.mktemp("relay-paused"),
        "test_signup_refused_paused",
        {"min_free_disk_space": "100000000G"},
    )
    with running(proc):
        yield proc


def test_paused_sign_up_gives_the_reason(paused_relay, dc):
    error = configure_error(dc, paused_relay, paused_relay.new_address(), random_password())
    assert PAUSED_TEXT in error, error
    assert "disk is nearly full" in error, error
    assert "AUTHENTICATIONFAILED" not in error, error
