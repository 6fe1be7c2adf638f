"""Traffic and checks against a relay reached through forwarded ports on 127.0.0.1 (the
appliance in QEMU: host port = offset + guest port), for tests/image/powercut.sh.

  remote.py accounts --offset N --state DIR   create 8 sender and 4 recipient accounts
                                              (DIR/accounts.json)
  remote.py traffic --offset N --state DIR --cut-pid PID --cut-after S [--cut N]
        run the submitters and receivers of soaklib; after S seconds and at least 5
        acknowledgements, SIGKILL PID (the QEMU process: a power cut) the moment the next
        `250` arrives, stop the traffic and write DIR/cut-N.json (acks before the cut, ...)
  remote.py check --offset N --state DIR [--bodies] [--label L]
        check every recipient's INBOX against DIR/ledger.jsonl (soaklib.check)

Each prints `CHECK <name> ok|FAIL <detail>` lines and exits 1 on a failure.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import soaklib as sl  # noqa: E402


def report(name: str, ok: bool, detail: str = "") -> None:
    print(f"CHECK {name} {'ok' if ok else 'FAIL'} {detail}".rstrip(), flush=True)


def load_accounts(state: Path) -> dict:
    return json.loads((state / "accounts.json").read_text())


def cmd_accounts(a) -> int:
    acc = {
        "senders": [sl.new_account() for _ in range(a.senders)],
        "rcpts": [sl.new_account() for _ in range(a.recipients)],
    }
    t0 = time.monotonic()
    try:
        sl.create_accounts(a.offset + 993, acc["senders"] + acc["rcpts"], time.monotonic() + 300)
    except RuntimeError as e:
        report("powercut-accounts", False, str(e))
        return 1
    (a.state / "accounts.json").write_text(json.dumps(acc))
    report("powercut-accounts", True, f"{len(acc['senders'])} senders, {len(acc['rcpts'])} recipients in {time.monotonic() - t0:.1f} s")
    return 0


def cmd_traffic(a) -> int:
    acc = load_accounts(a.state)
    ledger = sl.Ledger(a.state / "ledger.jsonl")
    gate = sl.Gate(opened=True)
    seed = int.from_bytes(os.urandom(4), "big")
    t = sl.Traffic(a.offset + 465, a.offset + 993, acc["senders"], acc["rcpts"], ledger, gate, seed,
                   retry_pause=0.5)
    acked_before = len(ledger.acked)
    t0 = time.monotonic()
    t.start()
    cut_at = None
    cut_unix = None
    acks_at_cut = 0
    # Bounded: the traffic runs at most --max-seconds before the cut.
    end = t0 + a.max_seconds
    while time.monotonic() < end:
        with t.ack_event:
            t.ack_event.wait(0.5)
        if time.monotonic() - t0 >= a.cut_after and t.stats.acked >= a.min_acks:
            # The cut comes right after an acknowledgement: others are on their way.
            with t.ack_event:
                t.ack_event.wait(5)
            try:
                os.kill(a.cut_pid, signal.SIGKILL)
            except ProcessLookupError:
                report(f"powercut-{a.cut}-under-load", False, f"process {a.cut_pid} is gone")
                break
            cut_at = time.monotonic() - t0
            cut_unix = time.time()
            acks_at_cut = t.stats.acked
            break
    # The clients stop once their connections fail (what they sent last is in doubt);
    # meanwhile the time until the relay lets a recipient log in again (boot included).
    t.gate.stop()
    ready_s = None
    if cut_at is not None:
        probe = acc["rcpts"][0]
        if sl.wait_login(a.offset + 993, probe, time.monotonic() + a.ready_within):
            ready_s = round(time.time() - cut_unix, 1)
    stuck = t.stop(timeout=30)
    ledger.close()
    st = t.stats
    fig = {
        "cut": a.cut,
        "cut_after_s": round(cut_at, 2) if cut_at is not None else None,
        "cut_unix": cut_unix,
        "ready_after_cut_s": ready_s,
        "acked_before_cut": acks_at_cut,
        "acked_this_run": len(ledger.acked) - acked_before,
        "sent": st.sent,
        "expunged": st.expunged,
        "seen": st.seen,
        "client_errors": st.conn_errors_open,
        "rate": round(acks_at_cut / cut_at, 1) if cut_at else 0,
    }
    (a.state / f"cut-{a.cut}.json").write_text(json.dumps(fig))
    ok = cut_at is not None and not stuck
    detail = (f"cut after {fig['cut_after_s']} s with {acks_at_cut} messages acknowledged ({fig['rate']}/s), "
              f"{st.expunged} expunged, {st.seen} \\Seen; login again {ready_s} s after the cut")
    if cut_at is None:
        detail = f"no cut: {st.acked} acknowledged in {a.max_seconds} s; errors {st.errors[:3]}"
    if stuck:
        detail += f"; workers did not stop: {stuck}"
    report(f"powercut-{a.cut}-under-load", ok, detail)
    return 0 if ok else 1


def cmd_check(a) -> int:
    acc = load_accounts(a.state)
    ledger = sl.Ledger(a.state / "ledger.jsonl")
    ledger.close()
    try:
        r = sl.check(a.offset + 993, acc["rcpts"], ledger, bodies=a.bodies)
    except (*sl.CONN_ERRORS, sl.imaplib.IMAP4.error) as e:
        report(a.label, False, f"IMAP: {e!r}")
        return 1
    (a.state / f"check-{a.label}.json").write_text(json.dumps({
        "expected": r.expected, "present": r.present, "lost": len(r.lost), "duplicated": len(r.duplicated),
        "revived": len(r.revived), "flags_lost": len(r.flags_lost), "uid_changed": len(r.uid_changed),
        "corrupt": len(r.corrupt), "refused_stored": len(r.refused_stored),
        "doubt_present": r.doubt_present, "doubt_absent": r.doubt_absent,
    }))
    report(a.label, r.failures() == 0, r.summary())
    for d in r.details():
        print(f"  {d}")
    return 0 if r.failures() == 0 else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("accounts", "traffic", "check"):
        p = sub.add_parser(name)
        p.add_argument("--offset", type=int, required=True)
        p.add_argument("--state", type=Path, required=True)
        if name == "accounts":
            p.add_argument("--senders", type=int, default=8)
            p.add_argument("--recipients", type=int, default=4)
        if name == "traffic":
            p.add_argument("--cut-pid", type=int, required=True)
            p.add_argument("--cut-after", type=float, required=True)
            p.add_argument("--cut", type=int, default=1)
            p.add_argument("--min-acks", type=int, default=5)
            p.add_argument("--max-seconds", type=float, default=120)
            p.add_argument("--ready-within", type=float, default=300,
                           help="seconds to wait for a login after the cut")
        if name == "check":
            p.add_argument("--bodies", action="store_true")
            p.add_argument("--label", default="powercut-check")
    a = ap.parse_args()
    a.state.mkdir(parents=True, exist_ok=True)
    return {"accounts": cmd_accounts, "traffic": cmd_traffic, "check": cmd_check}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
