"""Batch script rendering: golden files, #SBATCH quoting, and real execution with bash."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hpcbridge import slurm
from hpcbridge.errors import UsageError
from hpcbridge.models import Resources, TaskSpec

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"
HOSTILE = ["a'; touch pwned; echo '", "$(touch pwned2)", "`touch pwned3`", "ünï cødé",
           'dq" x \\" y', "#not-a-comment", "%j %x"]


def sbatch_words(line: str) -> list[str]:
    """A port of _get_argument() from slurm src/sbatch/opt.c: how sbatch itself splits the
    rest of a #SBATCH line (no shell: quotes, backslash escapes, unquoted # ends the line)."""
    words, i, n = [], 0, len(line)
    while True:
        while i < n and line[i].isspace():
            i += 1
        if i >= n:
            return words
        arg, quoted, q, esc = [], False, "", False
        while i < n and (quoted or not line[i].isspace()) and line[i] != "\n":
            c = line[i]
            if esc:
                esc = False
            elif c == "\\":
                esc, i = True, i + 1
                continue
            elif quoted:
                if c == q:
                    quoted, i = False, i + 1
                    continue
            elif c in "\"'":
                quoted, q, i = True, c, i + 1
                continue
            elif c == "#":
                return words + (["".join(arg)] if arg else [])
            arg.append(c)
            i += 1
        assert not quoted, f"unmatched quote in {line!r}"
        words.append("".join(arg))


def sbatch_options(script: str) -> list[str]:
    """The options sbatch would read from the script, the way _opt_batch_script() does."""
    out = []
    for line in script.splitlines()[1:]:
        if line.startswith("#SBATCH"):
            out += sbatch_words(line[len("#SBATCH"):])
        elif line.strip() and not line.lstrip().startswith("#"):
            break
    return out


def render(spec: TaskSpec, *, work_dir: str = "/scratch/alice/hpcbridge/01hq3v7k2m9xyz",
           resources: Resources | None = None, **kw) -> str:
    return slurm.render_batch_script(
        task_id="01hq3v7k2m9xyz", attempt=2, token="0123456789abcdef", spec=spec,
        resources=resources or Resources(), work_dir=work_dir, **kw)


def basic() -> str:
    spec = TaskSpec(command=("python", "sim.py", "--steps", "100"), env={"OMP_NUM_THREADS": "4"})
    res = slurm.merge_resources(
        Resources(time="00:10:00", cpus=4, mem="2G", signal="B:USR1@60"),
        Resources(partition="debug", account="proj1", qos="normal", time="1:00:00",
                  sbatch_options=("--constraint=intel",)))
    return render(spec, resources=res, setup=("module load python/3.11",),
                  env={"SITE": "lab", "OMP_NUM_THREADS": "1"}, exclude_nodes=("node3",))


def hostile() -> str:
    spec = TaskSpec(command=("printf", "%s\\n", *HOSTILE), env={"EVIL": "$(touch pwned4); `x` '\""})
    res = Resources(partition="a'; echo foo", account="$(rm -rf ~)", qos='q" --wrap="x',
                    gres="gpu:1 #SBATCH --uid=0", sbatch_options=('--mail-user=a"b c#d',))
    return render(spec, work_dir="/tmp/it's a \"dir\" $(x) 100%", resources=res, requeue=False)


@pytest.mark.parametrize("name,make", [("batch_script_basic.sh", basic),
                                       ("batch_script_hostile.sh", hostile)])
def test_golden(name, make):
    text = make()
    path = GOLDEN / name
    if os.environ.get("HPCB_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"re-run with HPCB_UPDATE_GOLDEN=1 if the change is wanted: {name}"


def test_basic_options_as_sbatch_reads_them():
    opts = sbatch_options(basic())
    assert opts == [
        "--job-name=hpcb-01hq3v7k2m9xyz-2",
        "--comment=hpcb:0123456789abcdef",
        "--chdir=/scratch/alice/hpcbridge/01hq3v7k2m9xyz",
        "--output=/scratch/alice/hpcbridge/01hq3v7k2m9xyz/.hpcbridge/attempt-2.out",
        "--error=/scratch/alice/hpcbridge/01hq3v7k2m9xyz/.hpcbridge/attempt-2.err",
        "--open-mode=append",
        "--partition=debug", "--account=proj1", "--qos=normal",
        "--time=00:10:00", "--cpus-per-task=4", "--mem=2G", "--signal=B:USR1@60",
        "--exclude=node3", "--requeue", "--constraint=intel",
    ]


def test_hostile_values_come_back_verbatim_one_option_each():
    opts = sbatch_options(hostile())
    wd = "/tmp/it's a \"dir\" $(x) 100%"
    assert f"--chdir={wd}" in opts
    assert "--output=/tmp/it's a \"dir\" $(x) 100%%/.hpcbridge/attempt-2.out" in opts
    assert "--partition=a'; echo foo" in opts
    assert "--account=$(rm -rf ~)" in opts
    assert '--qos=q" --wrap="x' in opts
    assert "--gres=gpu:1 #SBATCH --uid=0" in opts
    assert '--mail-user=a"b c#d' in opts and "--no-requeue" in opts
    assert not any(o.startswith(("--wrap", "--uid")) for o in opts)
    assert len(opts) == 12
    # Every #SBATCH line is one option, and no value line escaped the header.
    lines = hostile().splitlines()
    assert sum(ln.startswith("#SBATCH") for ln in lines) == 12


@pytest.mark.parametrize("field", ["partition", "account", "qos", "gres"])
@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\x00b", "x\n#SBATCH --uid=0"])
def test_newlines_and_nul_rejected(field, bad):
    with pytest.raises(UsageError):
        render(TaskSpec(command=("true",)), resources=Resources(**{field: bad}))


def test_other_rejections():
    spec = TaskSpec(command=("true",))
    with pytest.raises(UsageError):
        render(spec, work_dir="~/hpcbridge")  # sbatch does not expand ~
    with pytest.raises(UsageError):
        render(spec, work_dir="/w\n#SBATCH --uid=0")
    with pytest.raises(UsageError):
        render(spec, resources=Resources(time="10; rm"))
    with pytest.raises(UsageError):
        render(spec, resources=Resources(mem="2G\n"))
    with pytest.raises(UsageError):
        render(spec, resources=Resources(sbatch_options=("constraint=x",)))
    with pytest.raises(UsageError):
        render(spec, exclude_nodes=("node1;reboot",))
    with pytest.raises(UsageError):
        render(spec, env={"BAD-NAME": "x"})
    with pytest.raises(UsageError):
        slurm.render_batch_script(task_id="t", attempt=1, token="bad token", spec=spec,
                                  resources=Resources(), work_dir="/w")


def test_bash_syntax():
    for text in (basic(), hostile(), render(TaskSpec(script="echo hi\n"))):
        subprocess.run(["bash", "-n"], input=text, text=True, check=True)


# ------------------------------------------------------------------ real execution


def run_script(tmp_path: Path, spec: TaskSpec, **kw) -> tuple[subprocess.CompletedProcess[str], Path]:
    work = tmp_path / "work"
    (work / ".hpcbridge").mkdir(parents=True)
    script = slurm.render_batch_script(task_id="t1", attempt=1, token="tok1", spec=spec,
                                       resources=Resources(), work_dir=str(work), **kw)
    (tmp_path / "job.sh").write_text(script)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "SLURM_JOB_ID": "4242", "SLURM_RESTART_COUNT": "1", "SLURMD_NODENAME": "node7"}
    # sbatch would --chdir; emulate it.
    proc = subprocess.run(["bash", str(tmp_path / "job.sh")], cwd=work, env=env,
                          capture_output=True, text=True, timeout=30)
    return proc, work / ".hpcbridge" / "1"


def test_execute_hostile_argv(tmp_path):
    argv = ("printf", "%s\\n", "a'; touch pwned; echo '", "$(touch pwned2)", "`touch pwned3`",
            "ünï cødé")
    proc, markers = run_script(tmp_path, TaskSpec(command=argv, env={"X": "$(touch pwned4)"}),
                               setup=("export FROM_SETUP=1",), env={"Y": "'; touch pwned5; '"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "".join(a + "\n" for a in argv[2:])
    assert not list(tmp_path.rglob("pwned*"))
    assert (markers / "exit_code").read_text() == "0\n"
    assert (markers / "job_id").read_text() == "4242\n"
    assert (markers / "restarts").read_text() == "1\n"
    assert (markers / "node").read_text() == "node7\n"
    assert (markers / "started").read_text().strip().isdigit()
    assert not [p for p in markers.iterdir() if p.name.startswith(".")]  # no temp files left


def test_env_and_setup_reach_the_command(tmp_path):
    spec = TaskSpec(command=("bash", "-c", 'printf "%s|%s|%s" "$X" "$Y" "$FROM_SETUP"'),
                    env={"X": "$(touch pwned) it's"})
    proc, _ = run_script(tmp_path, spec, setup=("export FROM_SETUP=site",),
                         env={"Y": "cluster", "X": "overridden"})
    assert proc.stdout == "$(touch pwned) it's|cluster|site"
    assert not list(tmp_path.rglob("pwned*"))


def test_exit_code_propagates(tmp_path):
    proc, markers = run_script(tmp_path, TaskSpec(command=("bash", "-c", "exit 3")))
    assert proc.returncode == 3
    assert (markers / "exit_code").read_text() == "3\n"


def test_script_body_runs_verbatim(tmp_path):
    body = ("echo \"$((1+2)) $HOME-ok\"\ncat <<'EOF'\n$(not expanded)\nEOF\n"
            "HPCB_EOF_x\nexit 4\n")
    proc, markers = run_script(tmp_path, TaskSpec(script=body))
    assert proc.returncode == 4
    assert proc.stdout == f"3 {tmp_path}-ok\n$(not expanded)\n"
    assert "HPCB_EOF_x: command not found" in proc.stderr
    assert (markers / "exit_code").read_text() == "4\n"
    assert (markers / "script.sh").read_text() == body


def test_heredoc_delimiter_never_in_body():
    body = "x\n"
    delim = slurm.heredoc_delimiter(body, "tok")
    assert slurm.heredoc_delimiter(body + delim + "\n", "tok") != delim


@pytest.mark.skipif(shutil.which("python3") is None, reason="needs python3")
# TERM is not here any more: Slurm sends it to every process of the job itself, so the wrapper
# never passes it on (test_slurm_truth.py: test_a_term_from_slurm_reaches_the_task_once, and
# test_a_term_to_the_batch_shell_alone_is_not_passed_on below).
@pytest.mark.parametrize("sig", ["USR1", "USR2", "INT"])
def test_signals_are_forwarded_to_the_child(tmp_path, sig):
    child = ("import signal, sys, time\n"
             "for s in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT):\n"
             "    signal.signal(s, lambda n, f: (print('got', signal.Signals(n).name, flush=True), sys.exit(7)))\n"
             "open('ready', 'w').close()\n"
             "time.sleep(20)\n")
    work = tmp_path / "work"
    (work / ".hpcbridge").mkdir(parents=True)
    script = slurm.render_batch_script(task_id="t1", attempt=1, token="tok1",
                                       spec=TaskSpec(command=("python3", "-c", child)),
                                       resources=Resources(), work_dir=str(work))
    proc = subprocess.Popen(["bash", "-c", script], cwd=work, stdout=subprocess.PIPE, text=True)
    import time
    for _ in range(200):
        if (work / "ready").exists():
            break
        time.sleep(0.05)
    proc.send_signal(getattr(__import__("signal"), "SIG" + sig))
    out, _ = proc.communicate(timeout=15)
    assert out == f"got SIG{sig}\n"
    assert proc.returncode == 7
    assert (work / ".hpcbridge" / "1" / "exit_code").read_text() == "7\n"


@pytest.mark.skipif(shutil.which("python3") is None, reason="needs python3")
def test_a_term_to_the_batch_shell_alone_is_not_passed_on(tmp_path):
    """The shell keeps waiting for the task (which Slurm signals itself) and records its end."""
    child = ("import signal, sys, time\n"
             "signal.signal(signal.SIGTERM, lambda n, f: (print('got TERM', flush=True), sys.exit(7)))\n"
             "open('ready', 'w').close()\n"
             "while not __import__('os').path.exists('go'):\n"
             "    time.sleep(0.02)\n"
             "print('finished', flush=True)\n")
    work = tmp_path / "work"
    (work / ".hpcbridge").mkdir(parents=True)
    script = slurm.render_batch_script(task_id="t1", attempt=1, token="tok1",
                                       spec=TaskSpec(command=("python3", "-c", child)),
                                       resources=Resources(), work_dir=str(work))
    proc = subprocess.Popen(["bash", "-c", script], cwd=work, stdout=subprocess.PIPE, text=True)
    import time
    for _ in range(200):
        if (work / "ready").exists():
            break
        time.sleep(0.05)
    proc.send_signal(__import__("signal").SIGTERM)
    time.sleep(0.3)  # let the shell run its TERM trap while the task still waits for "go"
    (work / "go").touch()
    out, _ = proc.communicate(timeout=15)
    assert out == "finished\n"
    assert proc.returncode == 0
    assert (work / ".hpcbridge" / "1" / "exit_code").read_text() == "0\n"
