#!/usr/bin/env python3
"""Re-create the hpcb-*.txt captures in this directory against the lab (scripts/slurm-lab up).

Run as root from the repository root: python tests/data/slurm/22.05/hpcb-capture.py
Jobs run as $LAB_USER (hpcblab) in partition debug; every command line is built by
hpcbridge.slurm, exactly as the backend would build it. Takes about two minutes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))

from hpcbridge import slurm  # noqa: E402
from hpcbridge.models import Resources, TaskSpec  # noqa: E402

USER = os.environ.get("LAB_USER", "hpcblab")
OUT = Path(__file__).resolve().parent
BASE = Path(f"/tmp/hpcb-capture-{int(time.time())}")


def run(argv: list[str], stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["runuser", "-u", USER, "--", *argv], input=stdin, text=True, capture_output=True
    )
    if check and proc.returncode != 0:
        raise SystemExit(f"{argv} -> {proc.returncode}: {proc.stderr}")
    return proc


def submit(name: str, spec: TaskSpec, attempt: int = 1, **kw: object) -> str:
    work = BASE / name
    (work / ".hpcbridge").mkdir(parents=True)
    subprocess.run(["chown", "-R", USER, str(BASE)], check=True)
    script = slurm.render_batch_script(
        task_id=f"cap{name}", attempt=attempt, token=f"tok{name}", spec=spec,
        resources=slurm.merge_resources(spec.resources, Resources(partition="debug", time="2")),
        work_dir=str(work), **kw,  # type: ignore[arg-type]
    )
    job = slurm.parse_sbatch(run(slurm.sbatch_argv(), stdin=script).stdout)
    print(f"{name}: job {job}", flush=True)
    return job


def save(fname: str, argv: list[str], check: bool = True) -> str:
    proc = run(argv, check=check)
    (OUT / fname).write_text(proc.stdout)
    if proc.returncode:
        (OUT / (fname[:-4] + ".stderr.txt")).write_text(f"exit {proc.returncode}\n{proc.stderr}")
    print(f"saved {fname} ({len(proc.stdout.splitlines())} lines)", flush=True)
    return proc.stdout


def wait_for(job: str, states: set[str], timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        rows = slurm.parse_squeue(run(slurm.squeue_argv()).stdout)
        if any(r.job_id == job and r.raw_state in states for r in rows):
            return
        time.sleep(0.5)
    raise SystemExit(f"job {job} never reached {states}")


def main() -> None:
    BASE.mkdir()
    sleepy = TaskSpec(command=("sleep", "25"))
    # 1. pending (held by a begin time), running, completed, exit 3, array with a failure.
    pend = submit("pending", TaskSpec(command=("sleep", "25"),
                                      resources=Resources(sbatch_options=("--begin=now+3600",))))
    ok = submit("ok", TaskSpec(command=("true",)))
    fail3 = submit("exit3", TaskSpec(script="echo about to fail\nexit 3\n"))
    running = submit("running", sleepy)
    requeue = submit("requeue", sleepy)
    arr_script = (
        "#!/bin/bash\n#SBATCH --array=1-4%1\n#SBATCH --time=1\n#SBATCH -p debug\n"
        "#SBATCH -o /dev/null\n#SBATCH --job-name=hpcb-array\n#SBATCH --comment=hpcb:tokarray\n"
        "sleep 1\n[ \"$SLURM_ARRAY_TASK_ID\" = 2 ] && exit 5\nexit 0\n"
    )
    arr = slurm.parse_sbatch(run(slurm.sbatch_argv(), stdin=arr_script).stdout)
    print(f"array: job {arr}", flush=True)
    wait_for(running, {"RUNNING"})
    wait_for(requeue, {"RUNNING"})
    ids = [pend, ok, fail3, running, requeue, arr]
    time.sleep(3)
    save("hpcb-squeue-me-live.txt", slurm.squeue_argv())
    save("hpcb-squeue-jobs-live.txt", slurm.squeue_argv(ids))
    save("hpcb-scontrol-running.txt", slurm.scontrol_show_job_argv(running))
    save("hpcb-scontrol-pending.txt", slurm.scontrol_show_job_argv(pend))
    save("hpcb-sacct-live.txt", slurm.sacct_argv(ids))
    # 2. scancel a running job and a pending one; scontrol requeue a running one.
    run(slurm.scancel_argv([running, pend]))
    run(["scontrol", "requeue", requeue])
    time.sleep(2)
    save("hpcb-squeue-after-cancel-requeue.txt", slurm.squeue_argv())
    save("hpcb-scontrol-requeued.txt", slurm.scontrol_show_job_argv(requeue))
    # 3. the requeued job becomes eligible again after cred_expire+1 s and runs 25 s.
    wait_for(requeue, {"RUNNING"}, timeout=90)
    save("hpcb-squeue-requeued-running.txt", slurm.squeue_argv([requeue]))
    save("hpcb-sacct-requeued-running.txt", slurm.sacct_argv([requeue]))
    wait_for(requeue, {"COMPLETED", "CANCELLED", "FAILED"}, timeout=90)
    wait_for(f"{arr}_4", {"COMPLETED", "CANCELLED", "FAILED"}, timeout=90)
    time.sleep(2)
    save("hpcb-squeue-me-final.txt", slurm.squeue_argv())
    save("hpcb-squeue-jobs-final.txt", slurm.squeue_argv(ids))
    save("hpcb-sacct-final.txt", slurm.sacct_argv(ids))
    save("hpcb-sacct-by-name.txt", slurm.sacct_argv(names=[slurm.job_name("capexit3", 1)],
                                                     since=time.time() - 3600))
    save("hpcb-squeue-unknown-id.txt", slurm.squeue_argv(["999999"]), check=False)
    save("hpcb-sacct-unknown-id.txt", slurm.sacct_argv(["999999"]))
    for name in ("ok", "exit3", "requeue"):
        mdir = BASE / name / ".hpcbridge" / "1"
        markers = {p.name: p.read_text().strip() for p in sorted(mdir.iterdir())}
        print(f"markers {name}: {markers}")
    print("ids:", dict(zip(["pending", "ok", "exit3", "running", "requeue", "array"], ids, strict=True)))


if __name__ == "__main__":
    main()
