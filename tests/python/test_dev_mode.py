"""`relaybox dev` (the README's first command) with the real client: the printed
`dclogin:` link gives a working account, and a second account on the fixed dev ports
exchanges messages with it."""

from __future__ import annotations

import re
import urllib.parse

import pytest

from relayharness import (
    DEV_PORTS,
    RelayProcess,
    accepted_chat,
    cannot_run,
    dclogin_client,
    online_client,
    port_accepts,
    running,
)

pytestmark = pytest.mark.timeout(240)

DELIVERY_TIMEOUT = 60


@pytest.fixture(scope="module")
def dev_relay(tmp_path_factory):
    # `relaybox dev` listens on fixed ports (README). A developer may have one running:
    # then this test cannot run (skipped; under CI it fails). Dev mode creates accounts
    # whatever the machine's load (Config::dev), so a busy CI machine is no reason.
    busy = sorted(k for k, p in DEV_PORTS.items() if port_accepts(p))
    if busy:
        cannot_run(f"dev ports in use ({', '.join(busy)}): is a `relaybox dev` running?")
    proc = RelayProcess(tmp_path_factory.mktemp("relay-dev"), "test_dev_mode", dev=True)
    with running(proc):
        yield proc


def test_dev_banner_link_works(dev_relay, dc):
    links = re.findall(r"dclogin:\S+", dev_relay.log_text())
    assert links, "relaybox dev printed no dclogin: link\n" + dev_relay.log_tail()
    link = links[0]
    addr_part, _, query = link[len("dclogin:") :].partition("?")
    addr = urllib.parse.unquote(addr_part)
    params = dict(urllib.parse.parse_qsl(query))
    assert re.fullmatch(r"[a-z0-9]{9}@\[127\.0\.0\.1\]", addr), link
    assert params.get("ih") == "127.0.0.1" and params.get("sh") == "127.0.0.1", link
    assert params.get("ic") == "3" and params.get("v") == "1", link
    assert params.get("ip") == str(DEV_PORTS["imaps"]), link
    assert params.get("sp") == str(DEV_PORTS["submissions"]), link

    first = online_client(dc, link, addr, params["p"])
    assert first.account.get_config("configured_addr") == addr
    second = dclogin_client(dc, dev_relay)
    accepted_chat(first, second).send_text("dev mode hello")
    second.events.wait_incoming(DELIVERY_TIMEOUT, "dev mode hello")
    accepted_chat(second, first).send_text("dev mode reply")
    first.events.wait_incoming(DELIVERY_TIMEOUT, "dev mode reply")
