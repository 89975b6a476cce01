"""The submission script holds a lock while it runs, and the marker probe reports an attempt
whose script is still inside sbatch as ``submitting`` (issue "truth", item 1: a remote
script that outlives the local side's CommandTimeout is never presumed dead). Both scripts
run in real bash here, against a fake ``sbatch`` that waits for a file (no sleeps)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from hpcbridge.slurm.bulk import (
    BulkJob,
    parse_marker_report,
    parse_submit_report,
    render_marker_probe,
    render_submit_script,
)


def _probe(dirs: dict[str, str]) -> dict[str, dict[str, str]]:
    res = subprocess.run(["bash", "-s"], input=render_marker_probe(dirs), capture_output=True,
                         text=True, timeout=30, check=True)  # fmt: skip
    return parse_marker_report(res.stdout)


def test_an_attempt_inside_a_slow_sbatch_is_reported_submitting_until_sbatch_returns(tmp_path: Path) -> None:
    release = tmp_path / "release"
    fake = tmp_path / "sbatch"
    fake.write_text(f"#!/bin/bash\nwhile [ ! -e {release} ]; do read -t 0.05 < /dev/zero 2>/dev/null; done\n"
                    "echo 4242\n", encoding="utf-8")  # fmt: skip
    fake.chmod(0o755)
    d = tmp_path / "work" / ".hpcbridge" / "1"
    script = render_submit_script([BulkJob("tok", str(d), "#!/bin/bash\ntrue\n")],
                                  sbatch=[str(fake), "--parsable"], lanes=1)  # fmt: skip
    proc = subprocess.Popen(["bash", "-s"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)})  # fmt: skip
    assert proc.stdin is not None
    proc.stdin.write(script)
    proc.stdin.close()
    deadline = time.monotonic() + 20
    while not (d / "submitting").exists() and time.monotonic() < deadline:
        time.sleep(0.02)  # polling a condition: the script has started
    assert _probe({"tok": str(d)})["tok"].get("submitting") == "1"
    release.touch()
    assert proc.stdout is not None
    out = proc.stdout.read()
    assert proc.wait(timeout=30) == 0
    assert parse_submit_report(out).status["tok"] == (0, "4242")
    marks = _probe({"tok": str(d)})["tok"]
    assert marks.get("job_id") == "4242" and "submitting" not in marks


def test_a_dead_submission_script_is_not_reported_submitting(tmp_path: Path) -> None:
    """The script was killed (or the cluster rebooted): its lock is free, so the attempt is
    merely unknown and the grace periods decide."""
    d = tmp_path / ".hpcbridge" / "1"
    d.mkdir(parents=True)
    lock = tmp_path / "hpcb-submit.dead"
    lock.write_text("")
    (d / "submitting").write_text(str(lock))
    assert "submitting" not in _probe({"tok": str(d)}).get("tok", {})
