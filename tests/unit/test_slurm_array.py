"""Job arrays, pure side: which tasks share an array, the array's script (run in real bash as
Slurm would run element i), and the bulk script's array unit (real bash, a stand-in sbatch
that prints an id: the real one is used on the lab, tests/integration/test_arrays.py)."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from hpcbridge import slurm
from hpcbridge.errors import UsageError
from hpcbridge.models import Resources, TaskSpec
from hpcbridge.slurm.array import (
    ArrayJob,
    ArrayMember,
    array_key,
    index_spec,
    plan_arrays,
    render_array_script,
)
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
        script = job_script(f"t{i}", str(work), attempt=attempt)
        members.append(ArrayMember(f"tok{i}", str(work), attempt, script))
    return members


def _run_element(arr: ArrayJob, index: int, tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": str(index),
           "SLURM_JOB_ID": "80"}  # fmt: skip
    subprocess.run(["bash", "-c", render_array_script(arr)], env=env, check=True, timeout=30)


def test_element_i_runs_its_own_task_in_its_own_dir_with_its_own_logs(tmp_path: Path) -> None:
    members = _element(tmp_path, 3)
    arr = ArrayJob("arrtok", str(tmp_path / "arr"), array_key(members[0].script), tuple(members), max_running=2)
    text = render_array_script(arr)
    assert '#SBATCH --array="0-2%2"' in text and '#SBATCH --comment="hpcb:arrtok"' in text
    (tmp_path / "arr").mkdir()
    (tmp_path / "arr" / "jobs").write_bytes(arr.bundle())
    _run_element(arr, 1, tmp_path)
    work = Path(members[1].work_dir)
    assert (work / "where").read_text().strip() == str(work)
    assert (work / ".hpcbridge" / "attempt-1.out").read_text().strip() == "out-t1"
    assert (work / ".hpcbridge" / "attempt-1.err").read_text().strip() == "err-t1"
    marks = (work / ".hpcbridge" / "1")
    assert (marks / "job.sh").read_text() == members[1].script  # kept, as a single job's
    assert (marks / "array").read_text().strip() == "arrtok 1"
    assert (marks / "exit_code").read_text().strip() == "0"
    assert (marks / "job_id").read_text().strip() == "77_1"  # the element's name, not 80
    assert not Path(members[0].work_dir).exists()  # element 0 has not run: nothing made for it
    assert not (tmp_path / "pwned").exists()


def test_planned_indexes_with_a_hole_keep_their_numbers(tmp_path: Path) -> None:
    # The write-ahead of index 1 lost its compare-and-set: the array goes without it and
    # the others keep the indexes their attempts record.
    members = [replace(m, index=i) for i, m in zip((0, 2, 3, 7), _element(tmp_path, 4), strict=True)]
    arr = ArrayJob("arrtok", str(tmp_path / "arr"), (), tuple(members))
    assert '#SBATCH --array="0,2-3,7"' in render_array_script(arr)
    (tmp_path / "arr").mkdir()
    (tmp_path / "arr" / "jobs").write_bytes(arr.bundle())
    _run_element(arr, 3, tmp_path)
    assert (Path(members[2].work_dir) / ".hpcbridge" / "attempt-1.out").read_text().strip() == "out-t2"
    assert (Path(members[2].work_dir) / ".hpcbridge" / "1" / "job_id").read_text().strip() == "77_3"
    with pytest.raises(subprocess.CalledProcessError):
        _run_element(arr, 1, tmp_path)  # no such element: it runs nothing
    assert index_spec([5]) == "5" and index_spec([3, 1, 2, 9, 10]) == "1-3,9-10"
    with pytest.raises(UsageError):
        ArrayJob("t", "/a", (), (replace(members[0], index=2), members[1]))  # two with index 2


def test_the_bulk_script_submits_an_array_once_and_reports_every_element(tmp_path: Path) -> None:
    members = _element(tmp_path, 4)
    calls = tmp_path / "calls"
    fake = tmp_path / "sbatch"
    fake.write_text(f'#!/bin/bash\necho "$@" >> {calls}\necho "warning: noise"\necho "4242;lab"\n')
    fake.chmod(0o755)
    arr = ArrayJob("arrtok", str(tmp_path / "arr"), array_key(members[0].script), tuple(members))
    single = slurm.BulkJob("tokS", str(tmp_path / "s" / ".hpcbridge" / "1"), "#!/bin/bash\ntrue\n")
    script = render_submit_script([single], sbatch=[str(fake), "--parsable"], lanes=2, arrays=[arr])
    assert "__hpcb_mark" not in script  # the job scripts travel compressed, in the bundle
    res = subprocess.run(["bash", "-s"], input=script, capture_output=True, text=True, timeout=30,
                         env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)}, check=True)  # fmt: skip
    report = parse_submit_report(res.stdout)
    assert {t: report.status[t] for t in ("tok0", "tok3", "tokS")} == {
        "tok0": (0, "4242;lab"), "tok3": (0, "4242;lab"), "tokS": (0, "4242;lab")}
    assert len(calls.read_text().splitlines()) == 2  # one sbatch for the array, one single
    assert (tmp_path / "arr" / "array.sh").read_text() == render_array_script(arr)
    assert (tmp_path / "arr" / "jobs").read_bytes() == arr.bundle()
    assert not any(Path(m.work_dir).exists() for m in members)  # nothing per element yet
    dirs = {m.token: slurm.marker_dir(m.work_dir, 1) for m in members}
    probe = parse_marker_report(subprocess.run(
        ["bash", "-s"], input=render_marker_probe(dirs, {m.token: arr.dir for m in members}),
        capture_output=True, text=True, check=True, timeout=30).stdout)  # fmt: skip
    assert [probe[m.token]["array_job_id"] for m in members] == ["4242"] * 4
    # Element 2 runs: its own markers from then on.
    _run_element(arr, 2, tmp_path)
    probe = parse_marker_report(subprocess.run(
        ["bash", "-s"], input=render_marker_probe(dirs, {m.token: arr.dir for m in members}),
        capture_output=True, text=True, check=True, timeout=30).stdout)  # fmt: skip
    assert probe["tok2"]["job_id"] == "77_2" and probe["tok2"]["array"] == "arrtok 2"
    assert probe["tok2"]["exit_code"] == "0" and "exit_code" not in probe["tok1"]


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
    assert not (tmp_path / "arr" / "job_id").exists()


def test_a_bundle_that_arrives_damaged_submits_nothing(tmp_path: Path) -> None:
    members = _element(tmp_path, 2)
    fake = tmp_path / "sbatch"
    fake.write_text(f"#!/bin/bash\ntouch {tmp_path}/called\necho 1\n")
    fake.chmod(0o755)
    arr = ArrayJob("arrtok", str(tmp_path / "arr"), (), tuple(members))
    script = render_submit_script([], sbatch=[str(fake)], lanes=1, arrays=[arr])
    lines = script.splitlines()
    at = lines.index("HPCB_BUNDLE_END") - 1
    lines[at] = lines[at][: len(lines[at]) // 2]  # a base64 line cut short
    res = subprocess.run(["bash", "-s"], input="\n".join(lines) + "\n", capture_output=True, text=True,
                         timeout=30, env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)}, check=True)  # fmt: skip
    report = parse_submit_report(res.stdout)
    assert report.status["tok0"] == (255, "cannot write the job scripts")
    assert not (tmp_path / "called").exists()
