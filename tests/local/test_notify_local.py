"""Notifications end to end on the local backend (issue 12), every part real: the hpcbridge
CLI and daemon as separate processes, apprise sending to an HTTP webhook and an SMTP
server on loopback, and a ``kill -9`` of the daemon between the commit of an event and
the record of its delivery."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Env
from .localtools import py, wait_for
from .receivers import Hook, Mailbox

pytest.importorskip("apprise")


def _config(hb: Env, rules: str) -> dict[str, str]:
    conf = hb.root / "config.toml"
    conf.write_text(rules)
    return {**hb.env, "HPCBRIDGE_CONFIG": str(conf)}


def _hb(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hpcbridge", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)  # fmt: skip


def _submit(env: dict[str, str], *argv: str) -> str:
    done = _hb(env, "submit", "--max-attempts", "1", "--", *argv)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def _states(db: Path) -> dict[str, str]:
    conn = sqlite3.connect(db)
    try:
        return dict(conn.execute("SELECT id, state FROM tasks").fetchall())
    finally:
        conn.close()


def _outbox(env: dict[str, str], *flags: str) -> list[dict]:
    done = _hb(env, "events", "list", "--json", *flags)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _sync_until_ended(env: dict[str, str], db: Path, ids: list[str]) -> None:
    def ended() -> bool:
        _hb(env, "sync", "-q")
        return all(_states(db)[t] in ("succeeded", "failed") for t in ids)

    wait_for(ended, 60, 0.2, "the tasks to end")


def test_webhook_and_email_receive_each_event_with_its_id_and_tail(hb: Env) -> None:
    hook, box = Hook().start(), Mailbox()
    try:
        env = _config(hb, f'[[notify]]\nname = "hook"\non = ["succeeded", "failed"]\nurls = ["{hook.url}"]\n'
                          f'[[notify]]\nname = "mail"\non = ["failed"]\nurls = ["{box.url()}"]\n')  # fmt: skip
        ok = _submit(env, "true")
        bad = _submit(env, *py("import sys; print('mesh.h5: no such file', file=sys.stderr); sys.exit(3)"))
        _sync_until_ended(env, hb.db, [ok, bad])
        events = {e["task"]: e for e in _outbox(env)}
        assert {e["status"] for e in events.values()} == {"done"}, events
        wait_for(lambda: len(hook.requests) == 2 and len(box.messages) == 1, 20, what="both channels")
        by_id = {r["ids"]: r["body"] for r in hook.requests}
        assert set(by_id) == {events[ok]["event_id"], events[bad]["event_id"]}
        failure = by_id[events[bad]["event_id"]]
        assert failure["type"] == "failure" and failure["event_ids"] == events[bad]["event_id"]
        assert f"task: {bad}" in failure["message"] and "mesh.h5: no such file" in failure["message"]
        assert "reason: exit code 3" in failure["message"]
        (mail,) = box.messages
        assert mail["X-Hpcbridge-Event-Ids"] == events[bad]["event_id"]
        assert mail["Subject"] == f"hpcbridge: {bad} failed" and mail["To"] == "ops@example.org"
        text = next(p for p in mail.walk() if p.get_content_type() == "text/plain").get_payload(decode=True).decode()
        assert "mesh.h5: no such file" in text and "attempt: 1" in text
        # `events test` sends a test message through the real SMTP server too.
        done = _hb(env, "events", "test", "mail")
        assert done.returncode == 0 and "sent: mailto://127.0.0.1" in done.stdout, done.stderr
        wait_for(lambda: len(box.messages) == 2, 20, what="the test mail")
    finally:
        hook.close()
        box.close()


def test_a_webhook_down_for_three_cycles_gets_everything_when_back(hb: Env) -> None:
    hook = Hook()  # port reserved, nothing listening: connection refused
    try:
        env = _config(hb, f'[[notify]]\nname = "hook"\non = ["succeeded", "failed"]\n'
                          f'urls = ["{hook.url}?token=TOPSECRET"]\nbackoff = 0\n')  # fmt: skip
        ids = [_submit(env, "true"), _submit(env, "true"), _submit(env, "false")]
        _sync_until_ended(env, hb.db, ids)
        for _ in range(3):  # three more cycles with the receiver down
            done = _hb(env, "sync", "-q")
            assert done.returncode == 0 and "TOPSECRET" not in done.stderr + done.stdout
        assert "TOPSECRET" not in _hb(env, "events", "list").stdout + _hb(env, "config").stdout
        pending = _outbox(env, "--pending")
        assert {e["task"] for e in pending} == set(ids)
        assert all(e["tries"] >= 3 and "json://127.0.0.1" in (e["last_error"] or "") for e in pending), pending
        hook.start()
        assert _hb(env, "sync", "-q").returncode == 0
        assert _outbox(env, "--pending") == []
        expected = {e["event_id"] for e in _outbox(env)}
        assert len(expected) == 3 and sorted(hook.ids()) == sorted(expected), "each event once, none lost"
    finally:
        hook.close()


def test_kill_9_of_the_daemon_mid_delivery_loses_nothing_and_dedupes_to_once(hb: Env) -> None:
    hook = Hook(hold=True).start()
    env = _config(hb, f'[[notify]]\nname = "hook"\non = ["succeeded"]\nurls = ["{hook.url}"]\nbackoff = "1s"\n')
    ids = [_submit(env, "true") for _ in range(3)]
    log = (hb.root / "daemon1.log").open("w")
    daemon = subprocess.Popen([sys.executable, "-m", "hpcbridge", "daemon", "--interval", "1"], env=env,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    second = None
    try:
        # The daemon committed the events and is inside the first send (the receiver holds it).
        assert hook.arrived.wait(60), "no delivery started"
        held = hook.ids()[0]
        pending = {e["event_id"] for e in _outbox(env, "--pending")}
        assert held in pending, "the event in flight is not recorded as delivered"
        os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait(10)
        assert daemon.returncode == -signal.SIGKILL
        hook.release.set()
        # Restarted, it delivers what the killed one did not record, the held one included.
        log2 = (hb.root / "daemon2.log").open("w")
        second = subprocess.Popen([sys.executable, "-m", "hpcbridge", "daemon", "--interval", "1"], env=env,
                                  stdout=log2, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        wait_for(lambda: not _outbox(env, "--pending"), 60, 0.2, "the restarted daemon to deliver")
        expected = {e["event_id"] for e in _outbox(env)}
        assert {e["task"] for e in _outbox(env)} == set(ids) and len(expected) == 3
        got = hook.ids()
        assert got.count(held) == 2, f"the one in flight at the kill is sent again: {got}"
        assert sorted(set(got)) == sorted(expected), "after dedupe, each event id exactly once"
    finally:
        for proc in (daemon, second):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        hook.close()


def test_a_hung_local_task_is_stalled_cancelled_and_notified(hb: Env) -> None:
    """The same watch script as on a cluster, run by the local backend: a process that wrote
    once and sleeps is stalled after two stale readings, cancelled with the reason, and the
    `stalled` and `cancelled` events reach the webhook, with a watched file's event."""
    hook = Hook().start()
    try:
        env = _config(hb, f'[[notify]]\nname = "hook"\non = ["stalled", "cancelled", "file_appeared"]\n'
                          f'urls = ["{hook.url}"]\n')  # fmt: skip
        done = _hb(env, "submit", "--stall-after", "2s", "--on-stall", "cancel", "--watch-file", "started.txt",
                   "--", *py("import time; open('started.txt', 'w').write('x'); time.sleep(120)"))
        assert done.returncode == 0, done.stderr
        tid = done.stdout.strip().splitlines()[-1]

        def ended() -> bool:
            _hb(env, "sync", "-q")
            return _states(hb.db)[tid] == "cancelled"

        wait_for(ended, 60, 0.5, "the stalled task to be cancelled")
        info = json.loads(_hb(env, "tasks", "info", tid, "--json").stdout)
        assert info["reason"].startswith("stalled on localhost: no file in its work dir changed"), info["reason"]
        kinds = [e["event"] for e in _outbox(env) if e["task"] == tid]
        assert kinds == ["file_appeared", "stalled", "cancelled"], kinds
        wait_for(lambda: len(hook.requests) == 3, 20, what="three messages")
        assert "stalled on localhost" in hook.requests[1]["body"]["message"]
    finally:
        hook.close()
