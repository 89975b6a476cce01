"""Job arrays, pure side: which tasks share an array, the array's script (run in real bash as
Slurm would run element i), and the bulk script's array unit (real bash, a stand-in sbatch
that prints an id: the real one is used on the lab, tests/integration/test_arrays.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hpcbridge import slurm
from hpcbridge.errors import UsageError
from hpcbridge.models import Resources, TaskSpec
from hpcbridge.slurm.array import ArrayJob, ArrayMember, array_key, plan_arrays, render_array_script
from hpcbridge.slurm.bulk import (
    parse_marker_report,
    parse_submit_report,
    render_marker_probe,
    render_submit_script,
)


def job_script(tid: str, work: str, *, cpus: int = 1, attempt: int = 1, excl: tuple[str, ...] = ()) -> str:
    return slurm.render_batch_script(
        task_id=tid, attempt=attempt, token=f"tok{tid}", work_dir=work,
        spec=TaskSpec(command=("bash", "-c", "pwd > where; echo out-$0; echo err-$0 >&2", tid)),
        resources=Resources(cpus=cpus, time="00:05:00", partition="debug"), exclude_nodes=excl,
    )  # fmt: skip


def test_array_key_ignores_what_is_per_task_and_keeps_the_request() -> None:
    a = job_script("a", "/w/a")
    b = job_script("b", "/w/b", attempt=3)
    assert array_key(a) == array_key(b)  # name, comment, chdir, logs differ; the request not
    assert any("--cpus-per-task" in line for line in array_key(a))
    assert not any("--job-name" in line or "--output" in line for line in array_key(a))
    assert array_key(job_script("c", "/w/c", cpus=2)) != array_key(a)
    assert array_key(job_script("d", "/w/d", excl=("node1",))) != array_key(a)


def test_plan_splits_at_max_array_size_and_keeps_lone_tasks_single() -> None:
    keys = ["x"] * 7 + ["y"] + [None, None]
    arrays, singles = plan_arrays([(k,) if k else None for k in keys], max_size=3)
    assert arrays == [[0, 1, 2], [3, 4, 5]]
    assert singles == [6, 7, 8, 9]  # the 7th x alone, the lone y, the two that may not share
    with pytest.raises(UsageError):
        plan_arrays([("x",)], max_size=0)


def _element(tmp_path: Path, n: int, attempt: int = 1) -> list[ArrayMember]:
    members = []
    for i in range(n):
        work = tmp_path / f"task {i} $(x)"  # hostile on purpose: quoted, never expanded
        marker = work / ".hpcbridge" / str(attempt)
        marker.mkdir(parents=True)
        script = job_script(f"t{i}", str(work), attempt=attempt)
        (marker / "job.sh").write_text(script)
        members.append(ArrayMember(f"tok{i}", str(work), attempt, script))
    return members


def test_element_i_runs_its_own_task_in_its_own_dir_with_its_own_logs(tmp_path: Path) -> None:
    members = _element(tmp_path, 3)
    arr = ArrayJob("arrtok", str(tmp_path / "arr"), array_key(members[0].script), tuple(members), max_running=2)
    text = render_array_script(arr)
    assert '#SBATCH --array="0-2%2"' in text and '#SBATCH --comment="hpcb:arrtok"' in text
    (tmp_path / "arr").mkdir()
    env = {"PATH": "/usr/bin:/bin", "SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "1", "SLURM_JOB_ID": "80"}
    subprocess.run(["bash", "-c", text], env=env, check=True, timeout=30)
    work = Path(members[1].work_dir)
    assert (work / "where").read_text().strip() == str(work)
    assert (work / ".hpcbridge" / "attempt-1.out").read_text().strip() == "out-t1"
    assert (work / ".hpcbridge" / "attempt-1.err").read_text().strip() == "err-t1"
    marks = (work / ".hpcbridge" / "1")
    assert (marks / "exit_code").read_text().strip() == "0"
    assert (marks / "job_id").read_text().strip() == "77_1"  # the element's name, not 80
    assert not (Path(members[0].work_dir) / "where").exists()
    assert not (tmp_path / "pwned").exists()


def test_the_bulk_script_submits_an_array_once_and_reports_every_element(tmp_path: Path) -> None:
    members = _element(tmp_path, 4)
    for m in members:  # the bulk script writes them itself
        (Path(m.work_dir) / ".hpcbridge" / "1" / "job.sh").unlink()
    calls = tmp_path / "calls"
    fake = tmp_path / "sbatch"
    fake.write_text(f'#!/bin/bash\necho "$@" >> {calls}\necho "warning: noise"\necho "4242;lab"\n')
    fake.chmod(0o755)
    arr = ArrayJob("arrtok", str(tmp_path / "arr"), array_key(members[0].script), tuple(members))
    single = slurm.BulkJob("tokS", str(tmp_path / "s" / ".hpcbridge" / "1"), "#!/bin/bash\ntrue\n")
    script = render_submit_script([single], sbatch=[str(fake), "--parsable"], lanes=2, arrays=[arr])
    res = subprocess.run(["bash", "-s"], input=script, capture_output=True, text=True, timeout=30,
                         env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)}, check=True)  # fmt: skip
    report = parse_submit_report(res.stdout)
    assert {t: report.status[t] for t in ("tok0", "tok3", "tokS")} == {
        "tok0": (0, "4242;lab"), "tok3": (0, "4242;lab"), "tokS": (0, "4242;lab")}
    assert len(calls.read_text().splitlines()) == 2  # one sbatch for the array, one single
    assert (tmp_path / "arr" / "array.sh").read_text() == render_array_script(arr)
    probe = parse_marker_report(subprocess.run(
        ["bash", "-s"], input=render_marker_probe({m.token: slurm.marker_dir(m.work_dir, 1) for m in members}),
        capture_output=True, text=True, check=True, timeout=30).stdout)  # fmt: skip
    assert [probe[m.token]["job_id"] for m in members] == ["4242_0", "4242_1", "4242_2", "4242_3"]
    assert probe["tok2"]["array"] == "arrtok 2"
    for m in members:
        assert (Path(m.work_dir) / ".hpcbridge" / "1" / "job.sh").read_text() == m.script


def test_a_rejected_array_fails_every_element_with_sbatchs_error(tmp_path: Path) -> None:
    members = _element(tmp_path, 2)
    fake = tmp_path / "sbatch"
    fake.write_text("#!/bin/bash\necho 'sbatch: error: Batch job submission failed: Invalid job array specification' >&2\nexit 1\n")
    fake.chmod(0o755)
    arr = ArrayJob("arrtok", str(tmp_path / "arr"), (), tuple(members))
    script = render_submit_script([], sbatch=[str(fake)], lanes=4, arrays=[arr])
    res = subprocess.run(["bash", "-s"], input=script, capture_output=True, text=True, timeout=30,
                         env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)}, check=True)  # fmt: skip
    report = parse_submit_report(res.stdout)
    assert report.status["tok0"][0] == 1 and report.status["tok1"][0] == 1
    assert "Invalid job array specification" in report.errors["tok1"]
    assert not (Path(members[0].work_dir) / ".hpcbridge" / "1" / "job_id").exists()
