"""``hpcbridge top`` and ``--watch`` on the real lab cost the scheduler nothing: slurmctld's
own RPC counter (``sdiag``, by user) does not move for the lab user while ``top`` (through
Textual's pilot) and ``tasks list / tasks info / projects list --watch 0.2`` (subprocesses,
several refreshes each) draw a registry of real lab tasks; one sync, as a control, moves it.

With HPCBRIDGE_TOP_SVG=PATH the test also saves the screenshot of ``top`` that README shows.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpcbridge.lifecycle import TaskState
from hpcbridge.service import Service

from .conftest import wait_for

pytestmark = pytest.mark.integration
S = TaskState
PROJECT = "lab-views"


def rpc_count(user: str) -> int:
    """The lab user's RPC count in ``sdiag`` ("Remote Procedure Call statistics by user")."""
    out = subprocess.run(["sdiag"], capture_output=True, text=True, timeout=30, check=True).stdout
    by_user = out.split("statistics by user", 1)[1]
    m = re.search(rf"^\s*{re.escape(user)}\s+\(\s*\d+\)\s+count:(\d+)", by_user, re.M)
    return int(m.group(1)) if m else 0


def quiet_count(user: str, timeout: float = 60) -> int:
    """The count once it holds still for 2 s (jobs of this test starting or ending make RPCs
    of their own, as the lab user): the window the views are measured in."""
    deadline = time.monotonic() + timeout
    last = rpc_count(user)
    while time.monotonic() < deadline:
        time.sleep(2)
        now = rpc_count(user)
        if now == last:
            return now
        last = now
    raise AssertionError(f"{user}'s RPC count never held still for 2 s")


def watch_rounds(argv: list[str], rounds: int, env: dict[str, str]) -> str:
    """Run ``hpcbridge ARGV --watch 0.2`` until it has drawn ``rounds`` blocks, then Ctrl-C."""
    proc = subprocess.Popen([sys.executable, "-m", "hpcbridge", *argv, "--watch", "0.2"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None
    seen, out = 0, []
    deadline = time.monotonic() + 60
    while seen < rounds and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        out.append(line)
        seen += line.startswith("--- ")
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=30)
    assert seen >= rounds, "".join(out) + err
    assert proc.returncode == 0 and "Traceback" not in err, err
    return "".join(out) + rest


def test_top_and_watch_run_no_scheduler_command(service: Service, lab_config: Path, tmp_path: Path) -> None:
    user = service.cluster("lab").user or "hpcblab"
    ids = {}
    for name, cmd, extra in (("ok", ["true"], {}), ("bad", ["sh", "-c", "echo boom >&2; exit 3"], {}),
                             ("held", ["sleep", "300"], {"sbatch_options": ["--hold"]}),
                             ("run-a", ["sleep", "300"], {}), ("run-b", ["sleep", "300"], {})):  # fmt: skip
        ids[name] = service.submit(command=cmd, name=name, cluster="lab", project=PROJECT, cpus=1,
                                   time="00:06:00", **extra).id  # fmt: skip
    want = {"ok": S.SUCCEEDED, "bad": S.FAILED, "held": S.HELD, "run-a": S.RUNNING, "run-b": S.RUNNING}

    def settled() -> bool:
        service.sync_cluster("lab")
        return all(service.get(ids[n]).state == s for n, s in want.items())

    wait_for(settled, 120, "tasks succeeded, failed, held and running", interval=1.0)

    env = {**os.environ, "HPCBRIDGE_CONFIG": str(lab_config), "HPCBRIDGE_DB": str(service.registry.path)}
    svg = os.environ.get("HPCBRIDGE_TOP_SVG")
    # The lab is shared: another engineer's command as the same user can land in a window.
    # Views that made RPCs would move the count in every window; one clean window is proof.
    deltas = []
    for _ in range(4):
        before = quiet_count(user)
        outputs = {" ".join(a): watch_rounds(a, 5, env) for a in
                   (["tasks", "list"], ["tasks", "info", ids["bad"]], ["projects", "list"])}  # fmt: skip
        refreshes = asyncio.run(run_top(service, ids, svg))
        after = rpc_count(user)
        deltas.append(after - before)
        if after == before:
            break
    assert deltas[-1] == 0, f"RPCs by {user} in each window while top and --watch ran: {deltas}"
    assert refreshes >= 5
    assert ids["run-a"] in outputs["tasks list"] and "\x1b" not in outputs["tasks list"]
    assert "exit code 3" in outputs[f"tasks info {ids['bad']}"]
    assert PROJECT in outputs["projects list"]

    # The control: one sync (squeue, ...) does show in the same counter.
    service.sync_cluster("lab")
    assert rpc_count(user) > after


async def run_top(svc: Service, ids: dict[str, str], svg: str | None) -> int:
    from hpcbridge.tui import TopApp

    app = TopApp(svc, interval=0.2)
    async with app.run_test(size=(80, 24)) as pilot:
        start = app.refreshes
        for _ in range(200):
            if app.refreshes >= start + 5:
                break
            await pilot.pause(0.1)
        text = "\n".join(app.table.render_line(y).text for y in range(app.table.size.height))
        for name in ("ok", "bad", "held", "run-a"):
            assert ids[name] in text, text
        assert "JobHeldUser" in text, text  # Slurm's reason for the held task, from the registry
        while app.table.current != ids["bad"]:
            await pilot.press("down")
        await pilot.pause()
        assert "boom" in str(app.detail.render())  # the failure's stderr tail, kept in the registry
        if svg:
            app.save_screenshot(filename=Path(svg).name, path=str(Path(svg).parent))
        return app.refreshes - start


def test_sftp_uploads_and_downloads_report_their_bytes(service: Service, tmp_path: Path) -> None:
    """paramiko's put/get callbacks reach the observer the CLI draws bytes and rate from."""
    from hpcbridge.transfers import observe_transfers

    transport = service.backend("lab").transport  # type: ignore[attr-defined]
    src = tmp_path / "input.bin"
    src.write_bytes(os.urandom(3 * 2**20))
    remote = f"{service.cluster('lab').work_dir}/views-transfer-{os.getpid()}.bin"
    seen: list[tuple] = []
    with observe_transfers(lambda *a: seen.append(a)):
        transport.put(src, remote)
        transport.get(remote, tmp_path / "back.bin")
    transport.run(["rm", "-f", remote])
    ups = [s for s in seen if s[0] == "upload"]
    downs = [s for s in seen if s[0] == "download"]
    assert len(ups) > 2 and ups[-1] == ("upload", "input.bin", 3 * 2**20, 3 * 2**20)
    assert all(a[2] <= b[2] for a, b in zip(ups, ups[1:], strict=False))  # counting up
    assert downs and downs[-1][2:] == (3 * 2**20, 3 * 2**20)
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()


def test_top_with_sync_drives_tasks_through_the_budget(service: Service, lab_config: Path) -> None:
    """``top --sync``: a background thread (its own Service) runs sync cycles; the table sees
    the task reach succeeded without anything else syncing, and the RPCs show in sdiag."""
    from hpcbridge.tui import TopApp

    user = service.cluster("lab").user or "hpcblab"
    tid = service.submit(command=["sleep", "2"], name="synced", cluster="lab", project=PROJECT, cpus=1,
                         time="00:02:00").id  # fmt: skip
    before = rpc_count(user)

    def factory() -> Service:
        return Service.open(lab_config, service.registry.path, source="top")

    async def go() -> str:
        app = TopApp(service, interval=0.2, sync_service=factory, sync_interval=1.0)
        async with app.run_test(size=(80, 24)) as pilot:
            for _ in range(600):
                row = app.model.rows.get(tid)
                if row is not None and row.state == S.SUCCEEDED:
                    break
                await pilot.pause(0.1)
            await pilot.pause(0.3)
            status = str(app.status.render())
            return "\n".join(app.table.render_line(y).text for y in range(app.table.size.height)) + status

    text = asyncio.run(go())
    line = next(ln for ln in text.splitlines() if tid in ln)
    assert "succeeded" in line, text
    assert "sync every 1s" in text
    assert rpc_count(user) > before
