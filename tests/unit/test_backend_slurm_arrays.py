"""SlurmBackend.submit packs tasks into job arrays (ReplayTransport: the backend's real code,
scripted replies)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from hpcbridge.backends.slurm import SlurmBackend
from hpcbridge.testing import ReplayCall, ReplayTransport, Reply

from .test_backend_slurm_replay import cluster, report_line, submit_requests

DATA = Path(__file__).resolve().parents[1] / "data" / "slurm" / "22.05"


def answer_with_ids(first_id: int):
    """A bulk-script reply: each array / single job gets the next job id."""
    def reply(call: ReplayCall) -> Reply:
        script = call.script or ""
        out = []
        next_id = first_id
        for block in script.split("\n"):
            tokens = re.findall(r"T=\(([^)]*)\)", block)
            if tokens:
                for tok in tokens[0].split():
                    out.append(report_line(tok.strip("'"), 0, str(next_id)))
                next_id += 1
            elif m := re.search(r"printf 'HPCB %s %s %s\\n' '?(tok\w+)'?", block):
                out.append(report_line(m[1], 0, str(next_id)))
                next_id += 1
        return Reply("".join(out))
    return reply


def limits_reply(max_array_size: int) -> str:
    """The limits script's output from the real lab captures, MaxArraySize set as asked."""
    config = (DATA / "limits_scontrol_config.txt").read_text()
    config = re.sub(r"(?m)^MaxArraySize\s*=.*$", f"MaxArraySize            = {max_array_size}", config)
    parts = ["hpcblab\n", config, (DATA / "limits_assoc_limited.txt").read_text(), (DATA / "limits_qos.txt").read_text()]
    return "".join(f"HPCB-LIMITS-PART\n{p}" for p in parts)


def test_same_request_tasks_become_arrays_split_at_max_array_size() -> None:
    transport = (ReplayTransport()
                 .on_script(stdout=limits_reply(3), contains="HPCB-LIMITS-PART", times=1)
                 .on_script(answer_with_ids(500), times=1))  # fmt: skip
    reqs = submit_requests("a", "b", "c", "d", "e", cpus=2) + submit_requests("x", cpus=8)
    backend = SlurmBackend(cluster(arrays=True), transport)
    outcomes = {o.token: o for o in backend.submit(reqs)}
    ids = [(outcomes[f"tok{t}"].job_id or "").split("_") for t in "abcde"]
    assert [i for _, i in ids] == ["0", "1", "2", "0", "1"]  # element indexes, in order
    assert ids[0][0] == ids[1][0] == ids[2][0] != ids[3][0] == ids[4][0]  # two arrays
    assert (outcomes["tokx"].job_id or "").isdigit()  # a request of its own: a plain job
    [script] = [x for x in transport.scripts if "HPCB-LIMITS-PART" not in x]
    assert script.count("--array=") == 2 and "0-2" in script and "0-1" in script
    assert backend.commands == 2  # the limits (once), one submission script
    limits = backend.cluster_limits()
    assert limits.max_array_size == 3 and limits.max_submit_jobs is not None
    # MaxArraySize is read once per backend.
    transport.on_script(answer_with_ids(600), times=1)
    backend.submit(submit_requests("f", "g", cpus=2))
    assert backend.commands == 3
    transport.verify()


def test_arrays_off_or_lone_tasks_never_ask_for_limits() -> None:
    transport = ReplayTransport().on_script(answer_with_ids(700), times=2)
    out = SlurmBackend(cluster(arrays=False), transport).submit(submit_requests("a", "b"))
    assert [o.job_id for o in out] == ["700", "701"]
    out = SlurmBackend(cluster(arrays=True), transport).submit(submit_requests("c", cpus=1) +
                                                               submit_requests("d", cpus=2))
    assert [o.job_id for o in out] == ["700", "701"]
    assert "--array" not in "".join(transport.scripts)
    transport.verify()  # no scontrol call was made


def test_config_max_array_size_wins_over_the_cluster_and_elements_poll_by_their_id() -> None:
    transport = ReplayTransport().on_script(answer_with_ids(42), times=1)
    backend = SlurmBackend(cluster(arrays=True, max_array_size=10), transport)
    out = backend.submit(submit_requests("a", "b"))
    assert [o.job_id for o in out] == ["42_0", "42_1"]
    [script] = transport.scripts
    assert "hpcb:a-toka" in script  # the array is named after its first element's token
    transport.verify()  # no scontrol: the config said how large an array may be


def test_the_plan_is_made_before_the_write_ahead_and_submit_follows_it_with_holes() -> None:
    transport = ReplayTransport().on_script(answer_with_ids(90), times=1)
    backend = SlurmBackend(cluster(arrays=True, max_array_size=10), transport)
    reqs = submit_requests("a", "b", "c", "d", cpus=2) + submit_requests("x", cpus=8)
    refs = backend.plan(reqs)
    assert refs == {f"tok{t}": {"array": "a-toka", "index": i} for i, t in enumerate("abcd")}
    assert transport.scripts == []  # planning runs nothing on the cluster
    # b lost its write-ahead compare-and-set: the others go as planned, b's index left out.
    kept = [replace(r, backend_ref=refs.get(r.token, {})) for r in reqs if r.token != "tokb"]
    out = {o.token: o.job_id for o in backend.submit(kept)}
    assert out == {"tokx": "90", "toka": "91_0", "tokc": "91_2", "tokd": "91_3"}
    [script] = transport.scripts
    assert '--array="0,2-3"' in script
    transport.verify()


def test_a_plan_made_while_the_limits_are_read_asks_slurmctld_for_max_array_size_alone() -> None:
    """The limits read (Runtime.prefetch_limits runs it in a thread) waits on sacctmgr,
    0.3 s; a plan made meanwhile needs only MaxArraySize, which ``scontrol show config``
    answers from slurmctld, so it does not wait for the read."""
    import threading

    planned = threading.Event()

    def slow_limits(call: ReplayCall) -> Reply:
        assert planned.wait(10), "the plan waited for the limits read"
        return Reply(limits_reply(1001))

    config = re.sub(r"(?m)^MaxArraySize\s*=.*$", "MaxArraySize            = 2",
                    (DATA / "limits_scontrol_config.txt").read_text())  # fmt: skip
    transport = (ReplayTransport()
                 .on_script(slow_limits, contains="HPCB-LIMITS-PART", times=1)
                 .on("scontrol show config", stdout=config, times=1))  # fmt: skip
    backend = SlurmBackend(cluster(arrays=True), transport)
    read = threading.Thread(target=backend.cluster_limits)
    read.start()
    try:
        while not any(c.script and "HPCB-LIMITS-PART" in c.script for c in transport.calls):
            read.join(0.001)  # until the read has taken its lock and sent its script
        refs = backend.plan(submit_requests("a", "b", "c", "d", cpus=2))
    finally:
        planned.set()
        read.join(10)
    assert [refs[f"tok{t}"]["index"] for t in "abcd"] == [0, 1, 0, 1]  # split at the 2 scontrol said
    assert refs["toka"]["array"] == refs["tokb"]["array"] != refs["tokc"]["array"]
    assert backend.cluster_limits().max_array_size == 1001  # the read's own answer, kept
    assert backend.commands == 2
    transport.verify()
