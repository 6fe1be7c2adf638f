"""The card dies (issue 17 item 5) with the real Delta Chat core: two users chat on a relay
that makes automatic backups; one message is acknowledged by the relay while its receiver
is offline; the relay is killed and its data directory and chatmail.ini are gone; a fresh
relay is restored from the last automatic backup with `relaybox restore` (README "Backups
and restore") and started; both users go on in the same chats, end-to-end encrypted,
without configuring anything again, and the message acknowledged before the backup arrives.

The automatic backups run every minute (`backup_every = 1m`, the shortest, aligned to the
minute), so the test waits for the first one after the acknowledgement: up to a minute.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from deltachat_rpc_client import EventType
from deltachat_rpc_client.const import Connectivity

from relayharness import (
    RelayProcess,
    accepted_chat,
    dclogin_client,
    insecure_tls,
    relay_binary,
    running,
)

DELIVERY_TIMEOUT = 60
# One `backup_every = 1m` interval, the backup itself, and one more interval when the
# acknowledgement fell in the same second as a run.
BACKUP_TIMEOUT = 150
PASSPHRASE = "the operator keeps this one elsewhere"


def peer_certificate(port: int) -> bytes:
    """The certificate (DER) the relay presents on `port`."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with insecure_tls().wrap_socket(raw) as tls:
            return tls.getpeercert(binary_form=True)


def backup_header(path: Path) -> dict:
    """The readable JSON header, the file's second line (README)."""
    with open(path, "rb") as f:
        f.readline()
        return json.loads(f.readline())


def automatic_backups(directory: Path) -> list[Path]:
    """The automatic backups, oldest first (`relaybox-<domain>-<YYYYMMDD-HHMMSS>.backup`;
    a run still writing has a `.….partial` name)."""
    return sorted(directory.glob("relaybox-*.backup"))


def wait_backup_after(directory: Path, after: float, relay: RelayProcess) -> Path:
    """The first automatic backup made after `after` (Unix seconds): its run read the clock,
    then took the snapshot, so it holds everything acknowledged before `after`."""
    deadline = time.monotonic() + BACKUP_TIMEOUT
    while time.monotonic() < deadline:
        assert relay.alive(), "the relay died while waiting for a backup"
        for path in reversed(automatic_backups(directory)):
            if backup_header(path)["created"] > after:
                return path
        time.sleep(0.5)
    raise AssertionError(
        f"no automatic backup newer than {after:.0f} in {directory} within "
        f"{BACKUP_TIMEOUT} s: {[p.name for p in automatic_backups(directory)]}"
    )


@pytest.mark.timeout(300)
def test_card_dies_restore_from_last_automatic_backup(dc, tmp_path):
    # Off the card: the backups' directory (a USB drive) and the passphrase the operator kept.
    backups = tmp_path / "usb-drive"
    passphrase = tmp_path / "passphrase"
    passphrase.write_text(PASSPHRASE + "\n")
    relay = RelayProcess(
        tmp_path / "card",
        "test_card_dies",
        {
            "backup_dir": str(backups),
            "backup_every": "1m",
            "backup_keep": 2,
            "backup_passphrase_file": str(passphrase),
        },
    )
    with running(relay):
        a = dclogin_client(dc, relay)
        b = dclogin_client(dc, relay)
        chat_ab = accepted_chat(a, b)  # a's chat with b
        chat_ab.send_text("before the backup, from a")
        got = b.events.wait_incoming(DELIVERY_TIMEOUT, "before the backup, from a")
        chat_ba = got.get_snapshot().chat  # b's chat with a
        chat_ba.send_text("before the backup, from b")
        got = a.events.wait_incoming(DELIVERY_TIMEOUT, "before the backup, from b")
        assert got.get_snapshot().chat_id == chat_ab.id
        certificate = peer_certificate(relay.ports["imaps"])

        # b goes offline; a's next message is acknowledged and waits in b's mailbox.
        b.account.stop_io()
        pending = chat_ab.send_text("acknowledged before the backup")
        a.events.wait(
            "MsgDelivered",
            DELIVERY_TIMEOUT,
            lambda ev: ev.msg_id == pending.id,
            what="the relay acknowledged the pending message",
        )
        acknowledged = time.time()

        backup = wait_backup_after(backups, acknowledged, relay)
        listed = subprocess.run(
            [str(relay_binary()), "backup", "--list", str(backup)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert listed.returncode == 0, listed.stderr
        assert "127.0.0.1" in listed.stdout and "inside" in listed.stdout, listed.stdout

        # The card dies: no shutdown, and nothing of it is left.
        relay.kill()
        shutil.rmtree(relay.data_dir)
        relay.config_path.unlink()
        # a was online and lost its connections. Its app is closed while the card is
        # replaced (core would retry a send on the dead SMTP connection only 30 s later;
        # a real replacement takes longer than that, the test need not wait for it).
        a.events.wait(
            EventType.CONNECTIVITY_CHANGED,
            DELIVERY_TIMEOUT,
            lambda ev: a.account._rpc.get_connectivity(a.account.id) < Connectivity.CONNECTED,
            what="a lost its connection",
        )
        a.account.stop_io()

        # A fresh card: a chatmail.ini that names only the domain and the data directory;
        # the restore brings back the rest (ports, keys, certificates, accounts, mail) from
        # the last automatic backup.
        assert automatic_backups(backups)[-1] == backup
        relay.config_path.write_text(
            f"[params]\nmail_domain = 127.0.0.1\ndata_dir = {relay.data_dir}\n"
        )
        restored = subprocess.run(
            [
                str(relay_binary()),
                "restore",
                "--config",
                str(relay.config_path),
                "--passphrase-file",
                str(passphrase),
                str(backup),
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert "2 account(s)" in restored.stdout, restored.stdout
        relay.start(write_config=False)
        assert peer_certificate(relay.ports["imaps"]) == certificate, "another certificate"

        # Both come back online: the message acknowledged before the backup is there.
        a.account.start_io()
        b.account.start_io()
        got = b.events.wait_incoming(DELIVERY_TIMEOUT, "acknowledged before the backup")
        snap = got.get_snapshot()
        assert snap.chat_id == chat_ba.id
        assert snap.show_padlock, "the pending message should be end-to-end encrypted"

        # Both go on in the same chats, both ways, end-to-end encrypted.
        chat_ba.send_text("after the restore, from b")
        got = a.events.wait_incoming(DELIVERY_TIMEOUT, "after the restore, from b")
        assert got.get_snapshot().chat_id == chat_ab.id
        assert got.get_snapshot().show_padlock
        chat_ab.send_text("after the restore, from a")
        got = b.events.wait_incoming(DELIVERY_TIMEOUT, "after the restore, from a")
        assert got.get_snapshot().chat_id == chat_ba.id
        assert got.get_snapshot().show_padlock
        for client in (a, b):
            assert client.account.is_configured()
