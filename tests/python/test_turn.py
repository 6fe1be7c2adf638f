"""TURN with the real Delta Chat core (spec/relay.md §21 RT-1..3, §12; spec/client.md §5).

Core reads `/shared/vendor/deltachat/turn` after login and turns it into its ICE server
list (`ice_servers` RPC, core's calls module: the value is split at ':' into host, port,
username = expiry timestamp, password; the host is resolved to `turn:<ip>:<port>`). The
test asserts that the list core would hand to WebRTC holds the relay's TURN server with
fresh 5-day credentials, and that exactly those credentials allocate relayed addresses
and relay datagrams on the relay with a real TURN client (turnutils_uclient, Debian's
coturn package, installed by tests/run), while a tampered password fails.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time

import pytest

from relayharness import dclogin_client

pytestmark = pytest.mark.timeout(180)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TURN_PORT = free_udp_port()
RELAY_PARAMS = {"turn_listen": f"127.0.0.1:{TURN_PORT}"}

# RT-2: credentials are valid for 5 days.
LIFETIME = 5 * 24 * 3600
# How long core may take after going online to have read the METADATA.
ICE_TIMEOUT = 30.0
CLIENT_TIMEOUT = 30
MESSAGES = 5


def our_turn_entries(servers: list) -> list:
    url = f"turn:127.0.0.1:{TURN_PORT}"
    return [s for s in servers if url in (s.get("urls") or [])]


def wait_for_turn_entry(client) -> dict:
    deadline = time.monotonic() + ICE_TIMEOUT
    servers: list = []
    while time.monotonic() < deadline:
        servers = client.account.ice_servers()
        found = our_turn_entries(servers)
        if found:
            assert len(found) == 1, f"one entry for our TURN server: {servers}"
            return found[0]
        time.sleep(0.5)
    raise AssertionError(
        f"core's ICE servers never listed turn:127.0.0.1:{TURN_PORT} within "
        f"{ICE_TIMEOUT:.0f} s: {servers}"
    )


def uclient(username: str, password: str) -> tuple[bool, str]:
    """Client-to-client relaying through two allocations (`-y`), over channels; True
    when it exits 0 and every datagram came back."""
    binary = shutil.which("turnutils_uclient")
    assert binary, "turnutils_uclient (Debian package coturn) is not installed"
    argv = [binary, "-v", "-y", "-c", "-n", str(MESSAGES), "-l", "120"]
    argv += ["-p", str(TURN_PORT), "-u", username, "-w", password, "127.0.0.1"]
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=CLIENT_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        return False, "turnutils_uclient timed out (killed)"
    out = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    want = 2 * MESSAGES
    sent = re.findall(r"tot_send_msgs=(\d+)", out)
    recv = re.findall(r"tot_recv_msgs=(\d+)", out)
    ok = (
        done.returncode == 0
        and sent[-1:] == [str(want)]
        and recv[-1:] == [str(want)]
        and "Total lost packets 0 " in out
    )
    return ok, out


def test_core_uses_the_served_turn_credentials(relay, dc):
    client = dclogin_client(dc, relay)
    entry = wait_for_turn_entry(client)

    # RT-2: username = expiry (now + 5 days), password = base64 of an HMAC-SHA1.
    username, credential = entry.get("username"), entry.get("credential")
    assert username and username.isdigit(), f"username is a Unix time: {entry}"
    now = int(time.time())
    assert now + LIFETIME - 300 <= int(username) <= now + LIFETIME + 5, entry
    assert credential and len(credential) == 28 and credential.endswith("="), entry

    # The credentials core holds work on the relay's TURN server...
    ok, out = uclient(username, credential)
    assert ok, f"allocation and relaying with core's credentials failed:\n{out}"
    relayed = re.findall(r"Received relay addr: 127\.0\.0\.1:(\d+)", out)
    assert relayed, f"no relayed address reported:\n{out}"
    assert all(49152 <= int(p) <= 65535 for p in relayed), f"RT-1 port range: {relayed}"

    # ...and a tampered password does not.
    tampered = ("B" if credential[0] == "A" else "A") + credential[1:]
    ok, out = uclient(username, tampered)
    assert not ok, f"tampered password accepted:\n{out}"
    assert "Received relay addr" not in out, f"allocation with a tampered password:\n{out}"
