"""Notification rules, the outbox and its delivery (issue 12), through public seams: rules
from the config, a Service on a FakeBackend, command rules run as real processes (argv, no
shell), and the outbox rows read back from the registry."""

from __future__ import annotations

import json
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from hpcbridge import outbox
from hpcbridge.cli import cli
from hpcbridge.config import load_config, parse_config
from hpcbridge.errors import ConfigError, UsageError
from hpcbridge.events import Notice, mask_secrets, mask_url, parse_duration, render
from hpcbridge.lifecycle import TaskState
from hpcbridge.registry import Registry
from hpcbridge.runtime import Runtime
from hpcbridge.service import Service
from hpcbridge.testing import FakeBackend

S = TaskState
LAB = {"backend": "slurm", "transport": "ssh", "host": "fake", "commands_per_minute": 6000}

# A command rule's receiver: appends its argv, the event ids and its stdin to a JSONL file.
RECORDER = ("import json, os, sys; open(sys.argv[1], 'a').write(json.dumps({'argv': sys.argv[2:],"
            " 'ids': os.environ['HPCBRIDGE_EVENT_IDS'], 'body': sys.stdin.read()}) + '\\n')")  # fmt: skip


def service(tmp_path: Path, rules: list[dict], fake: FakeBackend) -> Service:
    config = parse_config({"default_cluster": "lab", "clusters": {"lab": LAB}, "notify": rules})
    return Service(Runtime(config, Registry(tmp_path / "r.db"), backends={"lab": fake}, source="test"))


def recorder_rule(log: Path, **extra: object) -> dict:
    script = log.with_suffix(".py")
    script.write_text(RECORDER)
    return {"name": "rec", "command": [sys.executable, str(script), str(log), "{task}", "{state}", "{count}"],
            "backoff": 0, **extra}  # fmt: skip


def received(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


# ---------------------------------------------------------------- rules and secrets
def test_rules_parse_with_filters_and_unknown_things_fail_with_a_hint() -> None:
    cfg = parse_config({"notify": [{"name": "slack", "on": ["failed"], "projects": ["alpha"],
                                    "urls": ["slack://T1/B2/secrettoken"], "metadata": {"k": "v"}}]})  # fmt: skip
    (rule,) = cfg.notify
    assert rule.on == ("failed",) and rule.projects == ("alpha",)
    base = Notice(event_id=1, task_id="t", kind="failed", at=0, project="alpha", metadata={"k": "v"})
    assert rule.matches(base)
    assert not rule.matches(Notice(event_id=1, task_id="t", kind="succeeded", at=0, project="alpha", metadata={"k": "v"}))
    assert not rule.matches(Notice(event_id=1, task_id="t", kind="failed", at=0, project="beta", metadata={"k": "v"}))
    assert not rule.matches(Notice(event_id=1, task_id="t", kind="failed", at=0, project="alpha"))
    for bad, words in [({"on": ["exploded"], "urls": ["json://h/x"]}, "unknown event"),
                       ({"on": ["failed"]}, "needs urls"),
                       ({"urls": ["hooks.slack.com/x"]}, "not a notification URL"),
                       ({"command": ["echo", "{secret}"]}, "unknown field"),
                       ({"urls": ["json://h"], "colour": "red"}, "unknown key")]:  # fmt: skip
        with pytest.raises(ConfigError, match=words):
            parse_config({"notify": [bad]})


def test_urls_from_env_and_from_a_file_and_a_world_readable_file_warns(tmp_path, monkeypatch) -> None:
    secret = tmp_path / "urls.txt"
    secret.write_text("# my hooks\njson://127.0.0.1:9/hook?token=FILESECRET\n")
    secret.chmod(0o644)
    monkeypatch.setenv("HB_SLACK", "slack://T1/B2/ENVSECRET")
    conf = tmp_path / "config.toml"
    conf.write_text('[[notify]]\nname = "ops"\nurls_env = ["HB_SLACK"]\nurls_file = "urls.txt"\n')
    cfg = load_config(conf)
    assert cfg.notify[0].urls == ("slack://T1/B2/ENVSECRET", "json://127.0.0.1:9/hook?token=FILESECRET")
    assert any("readable by others" in w and "chmod 600" in w for w in cfg.warnings)
    secret.chmod(0o600)
    assert load_config(conf).warnings == ()
    monkeypatch.delenv("HB_SLACK")
    with pytest.raises(ConfigError, match="HB_SLACK"):
        load_config(conf)


def test_hpcbridge_config_and_errors_show_urls_masked(tmp_path, monkeypatch) -> None:
    conf = tmp_path / "config.toml"
    conf.write_text('[[notify]]\nname = "ops"\non = ["failed"]\n'
                    'urls = ["slack://T1/B2/TOPSECRET", "mailto://bob:PASSWORD@smtp.example.org?to=a@b.org"]\n')  # fmt: skip
    monkeypatch.setenv("HPCBRIDGE_DB", str(tmp_path / "r.db"))
    out = CliRunner().invoke(cli, ["--config", str(conf), "config"], catch_exceptions=False).output
    assert "notify ops: on failed" in out
    assert "TOPSECRET" not in out and "PASSWORD" not in out and "mailto://bo****@smtp.example.org" in out
    assert "PASSWORD" not in mask_secrets("refused by mailto://bob:PASSWORD@smtp.example.org", [])
    assert mask_url("ntfy://my-private-topic") == "ntfy://****"
    assert mask_url("json://127.0.0.1:8080/hook?token=x") == "json://127.0.0.1:8080/****"


def test_durations_and_task_options(tmp_path) -> None:
    assert parse_duration("30m", "x") == 1800 and parse_duration("2h", "x") == 7200 and parse_duration(90, "x") == 90
    with pytest.raises(ConfigError, match="duration"):
        parse_duration("soon", "x")
    fake = FakeBackend()
    svc = service(tmp_path, [], fake)
    try:
        for bad, words in [({"stall_after": "soon"}, "duration"), ({"watch_file": ["../etc/passwd"]}, "relative"),
                           ({"watch_file": ["log.txt:("]}, "bad regex"), ({"notify": ["example.org"]}, "notification URL"),
                           ({"on_stall": "explode"}, "on_stall")]:  # fmt: skip
            with pytest.raises(UsageError, match=words):
                svc.submit(command=["true"], **bad)
        task = svc.submit(command=["true"], notify=["ntfy://secret-topic"], stall_after="30m", watch_file=["done.txt"])
        assert task.spec.notify == ("ntfy://secret-topic",) and task.spec.stall_after == 1800
        assert svc.info(task.id)["spec"]["notify"] == ["ntfy://****"]
    finally:
        svc.close()


# ---------------------------------------------------------------- the outbox
def test_the_outbox_row_is_written_with_the_transition_or_not_at_all(tmp_path) -> None:
    fake = FakeBackend()
    svc = service(tmp_path, [], fake)
    task = svc.submit(command=["true"], name="t")
    reg = svc.registry
    before = outbox.counts(reg)
    with pytest.raises(RuntimeError), reg.transaction():
        reg.transition(task.id, S.QUEUED, S.RUNNING, source="test")
        raise RuntimeError("crash before commit")
    assert outbox.counts(reg) == before and reg.get_task(task.id).state is S.QUEUED
    reg.transition(task.id, S.QUEUED, S.RUNNING, source="test")
    (last,) = outbox.entries(reg, everything=True)[-1:]
    assert last.notice.kind == "running" and last.status == "pending"
    svc.close()


def test_a_failure_is_delivered_once_with_its_tail_and_a_stable_id(tmp_path) -> None:
    log = tmp_path / "got.jsonl"
    fake = FakeBackend()
    svc = service(tmp_path, [recorder_rule(log, on=["failed"])], fake)
    task = svc.submit(command=["python3", "sim.py"], name="sim", max_attempts=1, project="alpha")
    fake.set_log("sim", 1, "stderr", "step 1\nerror: mesh.h5 missing\n")
    fake.set_state("sim", 1, S.FAILED, exit_code=2, nodes="node3")
    svc.sync_cluster("lab")
    (msg,) = received(log)
    assert msg["argv"] == [task.id, "failed", "1"]
    body = msg["body"]
    for words in (task.id, "sim", "project: alpha", "attempt: 1", "node: node3", "error: mesh.h5 missing",
                  f"event id: {msg['ids']}"):  # fmt: skip
        assert words in body, (words, body)
    svc.sync_cluster("lab")
    svc.sync()
    assert len(received(log)) == 1, "delivered events are not sent again"
    (entry,) = svc.outbox()
    assert entry.status == "done" and entry.notice.key == msg["ids"] and entry.notice.done == ("rec#cmd",)
    svc.close()


def test_a_digest_sends_one_message_for_a_cycle_of_many_failures(tmp_path) -> None:
    log = tmp_path / "got.jsonl"
    fake = FakeBackend()
    svc = service(tmp_path, [recorder_rule(log, on=["failed"], digest=True)], fake)
    tasks = svc.submit_many([{"command": ["x"], "name": f"t{i}", "max_attempts": 1} for i in range(120)])
    for i in range(120):
        fake.set_state(f"t{i}", 1, S.FAILED, exit_code=1)
    svc.sync_cluster("lab")
    (msg,) = received(log)
    assert msg["argv"][2] == "120" and len(msg["ids"].split(",")) == 120
    assert "... and 70 more" in msg["body"]
    assert {e.notice.task_id for e in svc.outbox() if e.status == "done"} == {t.id for t in tasks}
    svc.close()


def test_a_failing_target_backs_off_then_is_given_up_and_shown(tmp_path) -> None:
    fake = FakeBackend()
    rule = {"name": "broken", "on": ["failed"], "command": [sys.executable, "-c", "import sys; sys.exit('receiver down')"],
            "backoff": 0, "max_tries": 3}  # fmt: skip
    svc = service(tmp_path, [rule], fake)
    svc.submit(command=["x"], name="t", max_attempts=1)
    fake.set_state("t", 1, S.FAILED, exit_code=1)
    svc.sync_cluster("lab")
    (e,) = svc.outbox(pending=True)
    assert e.notice.tries == 1 and "receiver down" in (e.last_error or "")
    for _ in range(2):
        svc.deliver()
    assert svc.outbox(pending=True) == []
    (e,) = svc.outbox()
    assert e.status == "given_up" and e.notice.tries == 3
    out = CliRunner().invoke(cli, ["--db", str(tmp_path / "r.db"), "events", "list"], catch_exceptions=False).output
    assert "GIVEN UP" in out and "receiver down" in out
    svc.close()


def test_backoff_doubles_between_tries(tmp_path) -> None:
    fake = FakeBackend()
    rule = {"name": "broken", "on": ["failed"], "command": ["/nonexistent/notifier"], "backoff": "10s"}
    svc = service(tmp_path, [rule], fake)
    svc.submit(command=["x"], name="t", max_attempts=1)
    fake.set_state("t", 1, S.FAILED, exit_code=1)
    svc.sync_cluster("lab")
    (e,) = svc.outbox(pending=True)
    assert "not found" in (e.last_error or "")
    first = e.next_try_at - e.notice.at
    assert 9 < first < 12
    assert svc.deliver().retrying == 0, "not due yet: nothing tried"
    report = outbox.due(svc.registry, now=e.next_try_at + 0.1)
    assert len(report) == 1
    from hpcbridge.notify import deliver
    deliver(svc.runtime, now=e.next_try_at + 0.1)
    (e2,) = svc.outbox(pending=True)
    assert e2.notice.tries == 2 and 19 < e2.next_try_at - (e.next_try_at + 0.1) < 21
    svc.close()


def test_the_task_own_notify_url_is_a_one_off_rule(tmp_path) -> None:
    fake = FakeBackend()
    svc = service(tmp_path, [], fake)
    svc.submit(command=["x"], name="t", max_attempts=1, notify=["json://127.0.0.1:9/unreachable"])
    svc.submit(command=["x"], name="quiet", max_attempts=1)
    fake.set_state("t", 1, S.FAILED, exit_code=1)
    fake.set_state("quiet", 1, S.FAILED, exit_code=1)
    svc.sync_cluster("lab")
    (e,) = svc.outbox(pending=True)  # the other task's failure: no rule, not pending
    assert e.notice.name == "t" and e.last_error and "json://127.0.0.1:9/****" in e.last_error
    svc.close()


def test_events_test_sends_through_a_rule_and_names_a_missing_one(tmp_path, monkeypatch) -> None:
    log = tmp_path / "got.jsonl"
    conf = tmp_path / "config.toml"
    rule = recorder_rule(log)
    conf.write_text("[[notify]]\nname = 'rec'\ncommand = " + json.dumps(rule["command"]) + "\n")
    monkeypatch.setenv("HPCBRIDGE_DB", str(tmp_path / "r.db"))
    res = CliRunner().invoke(cli, ["--config", str(conf), "events", "test", "rec"], catch_exceptions=False)
    assert res.exit_code == 0 and "sent: command" in res.output
    (msg,) = received(log)
    assert msg["argv"][1] == "test" and "a test of notify rule rec" in msg["body"]
    res = CliRunner().invoke(cli, ["--config", str(conf), "events", "test", "nope"], catch_exceptions=False)
    assert res.exit_code == 1 and "error: no notify rule named 'nope'" in res.output and "rec" in res.output


def test_render_of_one_notice() -> None:
    title, body = render([Notice(event_id=7, task_id="abc", kind="timed_out", at=0, name="run", reason="TIMEOUT",
                                 stderr_tail="x\n", from_state="running")])  # fmt: skip
    assert title == "hpcbridge: run timed_out" and "event: running -> timed_out" in body and "abc-7" in body


def test_secret_file_mode_check_uses_group_and_other_bits(tmp_path) -> None:
    f = tmp_path / "u"
    f.write_text("json://h/x\n")
    for mode, warns in ((0o600, False), (0o640, True), (0o604, True), (0o400, False)):
        f.chmod(mode)
        cfg = parse_config({"notify": [{"urls_file": str(f)}]})
        assert bool(cfg.warnings) is warns, stat.filemode(mode)


def test_the_documented_example_rule_set_parses(tmp_path, monkeypatch) -> None:
    import tomllib

    example = Path(__file__).parents[2] / "configs" / "notify.example.toml"
    data = tomllib.loads(example.read_text())
    urls = tmp_path / "urls.txt"
    urls.write_text("mailtos://alice:APP_PASSWORD@smtp.example.org?to=alice@example.org\n")
    urls.chmod(0o600)
    data["notify"][1]["urls_file"] = str(urls)
    monkeypatch.setenv("HPCBRIDGE_SLACK_URL", "slack://T000/B000/XXXX")
    cfg = parse_config(data)
    assert [r.name for r in cfg.notify] == ["slack-failures", "email", "phone", "desktop"]
    assert cfg.notify[0].digest and cfg.notify[2].metadata == {"sweep": "heat-2026"}
    assert cfg.warnings == ()


def test_without_apprise_a_url_rule_says_how_to_get_it_and_keeps_the_event(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "apprise", None)  # import apprise -> ImportError
    fake = FakeBackend()
    svc = service(tmp_path, [{"name": "slack", "on": ["failed"], "urls": ["slack://T1/B2/SECRETTOKEN"]}], fake)
    svc.submit(command=["x"], name="t", max_attempts=1)
    fake.set_state("t", 1, S.FAILED, exit_code=1)
    svc.sync_cluster("lab")
    (e,) = svc.outbox(pending=True)
    assert "apprise" in (e.last_error or "") and "pip install 'hpcbridge[notify]'" in (e.last_error or "")
    assert "SECRETTOKEN" not in (e.last_error or "")
    svc.close()


def test_cli_start_imports_no_notification_library(tmp_path) -> None:
    code = ("import sys; from hpcbridge.cli import main; sys.argv = ['hpcbridge', 'tasks', 'list'];\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('APPRISE' if 'apprise' in sys.modules else 'CLEAN', file=sys.stderr)")  # fmt: skip
    env = {"HPCBRIDGE_DB": str(tmp_path / "r.db"), "PATH": "/usr/bin:/bin", "XDG_CONFIG_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.stderr.strip().splitlines()[-1] == "CLEAN", done.stderr


def test_migration_007_adds_the_outbox_to_an_older_registry_once(tmp_path) -> None:
    import sqlite_utils

    from hpcbridge.schema import MIGRATIONS

    path = tmp_path / "old.db"
    db = sqlite_utils.Database(sqlite3.connect(path))
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at REAL)")
    for name, fn in MIGRATIONS[:6]:
        fn(db)
        db.execute("INSERT INTO _migrations VALUES (?, 0)", (name,))
    db.conn.commit()
    db.conn.close()
    reg = Registry(path)
    assert "007_events_outbox" in reg.applied_migrations()
    assert "watch" in reg.db.table("attempts").columns_dict and reg.db.table("outbox").exists()
    MIGRATIONS[6][1](reg.db)  # again: nothing fails
    reg.close()


def test_finished_outbox_rows_are_pruned_pending_ones_kept(tmp_path) -> None:
    fake = FakeBackend()
    svc = service(tmp_path, [{"name": "x", "on": ["failed"], "command": ["/nonexistent"], "backoff": 0}], fake)
    svc.submit(command=["x"], name="t", max_attempts=1)
    fake.set_state("t", 1, S.FAILED, exit_code=1)
    svc.sync_cluster("lab")
    before = outbox.counts(svc.registry)
    assert before.get("pending") == 1 and before.get("no_rule", 0) >= 1
    assert outbox.prune(svc.registry, older_than=time.time() + 1) == before["no_rule"]
    assert outbox.counts(svc.registry) == {"pending": 1}
    svc.close()


def test_hpcbridge_config_says_when_url_rules_lack_apprise(tmp_path, monkeypatch) -> None:
    import importlib.util

    conf = tmp_path / "config.toml"
    conf.write_text('[[notify]]\nurls = ["ntfy://topic"]\n')
    monkeypatch.setenv("HPCBRIDGE_DB", str(tmp_path / "r.db"))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "apprise" else real(name, *a))
    res = CliRunner().invoke(cli, ["--config", str(conf), "config"], catch_exceptions=False)
    assert "apprise is not installed; pip install 'hpcbridge[notify]'" in res.output
