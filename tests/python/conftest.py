"""Fixtures of the real-client tests.

- `relay` (per test module): the real `relaybox serve` on free loopback ports with a fresh
  data directory; a module may set `RELAY_PARAMS = {...}` for extra chatmail.ini keys.
  At teardown the process is stopped and the module errors if the relay had died.
- `dc` (per test module): one deltachat-rpc-server process (client.md §8 gotcha 6),
  its stderr in tests/out/python/<module>-rpc-server.log.

A failing test report carries the tail of the relay log; the whole log is copied to
tests/out/python/<module>-relay.log.
"""

from __future__ import annotations

import pytest
from deltachat_rpc_client import DeltaChat, Rpc

from relayharness import ACTIVE_RELAYS, OUT_DIR, RelayProcess, rpc_server_binary, running


@pytest.fixture(scope="module")
def relay(request, tmp_path_factory):
    name = request.module.__name__.rsplit(".", 1)[-1]
    params = getattr(request.module, "RELAY_PARAMS", {})
    proc = RelayProcess(tmp_path_factory.mktemp(f"relay-{name}"), name, params)
    with running(proc):
        yield proc


@pytest.fixture(scope="module")
def dc(request, tmp_path_factory):
    """One deltachat-rpc-server per module; its stderr goes to
    tests/out/python/<module>-rpc-server.log (a pipe nobody reads could fill and stall it)."""
    name = request.module.__name__.rsplit(".", 1)[-1]
    accounts = tmp_path_factory.mktemp("dc-accounts")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    with open(OUT_DIR / f"{name}-rpc-server.log", "wb") as log:
        with Rpc(
            accounts_dir=str(accounts / "accounts"),
            rpc_server_path=rpc_server_binary(),
            stderr=log,
        ) as rpc:
            yield DeltaChat(rpc)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for proc in ACTIVE_RELAYS:
            alive = "running" if proc.alive() else "NOT RUNNING"
            report.sections.append(
                (f"relay {proc.name} ({alive}) log", proc.log_tail()),
            )
