"""Why a task did not succeed, in one line and one hint. Pure: text and numbers in.

``diagnose()`` takes what hpcbridge keeps about an ended attempt (its state, exit code and
signal, the tails of its stderr and stdout, its ``Usage`` from sacct, the Slurm reason) and
returns a ``Diagnosis``: a summary line, a hint for the common causes (time limit, memory,
node failure, a missing input, a command not found, permission denied, a Python traceback,
a crash), and the lines of output worth showing (stderr, or stdout when stderr is empty).

Exit codes above 128 come from a shell whose child died of signal (code - 128): hpcbridge's
job wrapper is such a shell, so a task killed by SIGSEGV ends as exit code 139, while a job
step killed outright shows as signal 11 in sacct (ExitCode ``0:11``). Both read the same.
"""

from __future__ import annotations

import re
import signal as _signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .lifecycle import TaskState
from .slurm.queue import Reason, explain_reason
from .slurm.states import map_state
from .slurm.usage import Usage, format_size, looks_out_of_memory

# Signal numbers are the cluster's (Linux). Python's signal module names them when this
# machine is Linux too; elsewhere only the numbers POSIX fixes are named (7, 10, 12 and up
# differ between Linux and BSD/macOS).
_PORTABLE = {1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 5: "SIGTRAP", 6: "SIGABRT",
             8: "SIGFPE", 9: "SIGKILL", 11: "SIGSEGV", 13: "SIGPIPE", 14: "SIGALRM",
             15: "SIGTERM"}  # fmt: skip


def signal_name(number: int) -> str | None:
    """``9`` -> ``"SIGKILL"``; None for a number without a (known) name."""
    if sys.platform.startswith("linux"):
        try:
            return _signal.Signals(number).name
        except ValueError:
            return None
    return _PORTABLE.get(number)


def _sig(number: int) -> str:
    name = signal_name(number)
    return f"signal {number} ({name})" if name else f"signal {number}"


def describe_exit(exit_code: int | None, signal: int | None) -> str:
    """``(2, 0)`` -> ``"exit code 2"``; ``(0, 9)`` -> ``"killed by signal 9 (SIGKILL)"``;
    ``(139, 0)`` -> ``"exit code 139 (a shell's code for signal 11 (SIGSEGV))"``;
    127/126 get the shell's meaning; ``(None, None)`` -> ``"exit status unknown"``."""
    if signal:
        text = f"killed by {_sig(signal)}"
        return text if not exit_code else f"exit code {exit_code}, {text}"
    if exit_code is None:
        return "exit status unknown"
    if exit_code == 127:
        return "exit code 127 (command not found)"
    if exit_code == 126:
        return "exit code 126 (command not executable)"
    if 128 < exit_code <= 128 + 64:
        return f"exit code {exit_code} (a shell's code for {_sig(exit_code - 128)})"
    return f"exit code {exit_code}"


@dataclass(frozen=True)
class Diagnosis:
    """``summary``: one line (what happened); ``hint``: what to do, or None when there is
    nothing specific to say; ``tail``: the output lines to show, from ``tail_source``
    (``"stderr"``, ``"stdout"`` or None when both were empty)."""

    summary: str
    hint: str | None
    tail: tuple[str, ...]
    tail_source: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary, "hint": self.hint, "tail": list(self.tail),
                "tail_source": self.tail_source}  # fmt: skip


def _lines(text: str | Sequence[str] | None) -> list[str]:
    if text is None:
        return []
    lines = text.splitlines() if isinstance(text, str) else [str(x) for x in text]
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _state(state: str | TaskState | None) -> TaskState | None:
    """A lifecycle state from either spelling: ``"timed_out"`` or Slurm's ``"TIMEOUT"``."""
    if state is None:
        return None
    if isinstance(state, TaskState):
        return state
    try:
        return TaskState(str(state).strip().lower())
    except ValueError:
        return map_state(str(state))


_WORDS = {
    TaskState.SUCCEEDED: "succeeded", TaskState.FAILED: "failed",
    TaskState.CANCELLED: "cancelled", TaskState.TIMED_OUT: "timed out",
    TaskState.OUT_OF_MEMORY: "out of memory", TaskState.NODE_FAILED: "node failure",
    TaskState.PREEMPTED: "preempted", TaskState.LOST: "lost",
}  # fmt: skip
# Slurm's own lines in the job's stderr (slurmstepd), and other programs' common last words
_SLURM_END = re.compile(r"\*\*\* JOB \S+ ON \S+ CANCELLED AT \S+ DUE TO (TIME LIMIT|NODE "
                        r"FAILURE|PREEMPTION)", re.I)  # fmt: skip
_MEMORY = re.compile(r"exceeded (job )?memory limit|oom[-_ ]kill|out of memory|MemoryError|"
                     r"std::bad_alloc|Cannot allocate memory", re.I)  # fmt: skip
_NO_FILE = re.compile(r"(?:^|[\s:'\"])(?P<path>[^\s:'\"]+)['\"]?: No such file or directory"
                      r"|No such file or directory: '(?P<py>[^']+)'")  # fmt: skip
_NOT_FOUND = re.compile(r"(?P<cmd>[^\s:]+): (command )?not found", re.I)
_PERMISSION = re.compile(r"Permission denied", re.I)
_SEGV = re.compile(r"Segmentation fault|SIGSEGV", re.I)
_EXC = re.compile(r"^(?P<type>[A-Za-z_][\w.]*)(?::\s?(?P<msg>.*))?$")


def _traceback_last(lines: Sequence[str]) -> str | None:
    """The exception line of the last Python traceback in ``lines`` (``KeyError: 'x'``)."""
    starts = [i for i, ln in enumerate(lines) if ln.startswith("Traceback (most recent call")]
    if not starts:
        return None
    for ln in reversed(lines[starts[-1] + 1:]):
        if ln.strip() and not ln.startswith((" ", "\t")) and _EXC.match(ln.strip()):
            return ln.strip()
    return None


def _memory(usage: Usage | None) -> str:
    if usage is None or usage.max_rss_bytes is None:
        return ""
    limit = f" of {format_size(usage.alloc_mem_bytes)}" if usage.alloc_mem_bytes else ""
    return f"peak {format_size(usage.max_rss_bytes)}{limit}"


def diagnose(
    state: str | TaskState | None,
    exit_code: int | None,
    signal: int | None,
    stderr_tail: str | Sequence[str] | None,
    stdout_tail: str | Sequence[str] | None,
    usage: Usage | None = None,
    reason: Reason | str | None = None,
    *,
    lines: int = 10,
) -> Diagnosis:
    """Summary, hint and output tail for an attempt that ended (``lines``: how many tail
    lines to keep). ``state`` is hpcbridge's (``"timed_out"``) or Slurm's (``"TIMEOUT"``,
    ``"CANCELLED by 1001"``). Pure: give it what the registry kept, cluster or not."""
    err, out = _lines(stderr_tail), _lines(stdout_tail)
    both = err + out
    text = "\n".join(both)
    st = _state(state)
    why = reason if isinstance(reason, Reason) or reason is None else explain_reason(reason)
    slurm_end = _SLURM_END.search(text)
    cause = slurm_end[1].upper() if slurm_end else ""
    shell_sig = exit_code - 128 if exit_code is not None and 128 < exit_code <= 192 else None
    sig = signal or shell_sig
    node = f" on {usage.nodes}" if usage is not None and usage.nodes else ""
    exit_text = describe_exit(exit_code, signal)
    py_last = _traceback_last(both)
    hint: str | None = None
    if st is TaskState.OUT_OF_MEMORY or looks_out_of_memory(usage, str(state or ""), signal) or (
        sig == 9 and _MEMORY.search(text)
    ):
        words = "out of memory"
        mem = _memory(usage)
        hint = ("The job used more memory than it was given and was killed"
                f"{' (' + mem + ')' if mem else ''}: ask for more memory (--mem), or make the "
                "problem smaller.")  # fmt: skip
    elif st is TaskState.TIMED_OUT or cause == "TIME LIMIT":
        words = "timed out"
        limit = usage.timelimit_seconds if usage is not None else None
        got = f" ({limit // 60} min)" if limit else ""
        hint = (f"It ran into its time limit{got}: ask for more time (--time), or let it "
                "checkpoint and resume.")  # fmt: skip
    elif st is TaskState.NODE_FAILED or cause == "NODE FAILURE":
        words = "node failure"
        hint = (f"The node{node or ''} failed under the job; the task itself may be fine. "
                "Resubmit (hpcbridge retries node failures by default).")  # fmt: skip
    elif st is TaskState.PREEMPTED or cause == "PREEMPTION":
        words = "preempted"
        hint = "A higher-priority job took its resources; it can run again as it is."
    elif st is TaskState.CANCELLED:
        words = "cancelled"
        if why is not None and why.code == "DependencyNeverSatisfied":
            hint = why.explanation + " " + why.action
    else:
        words = _WORDS.get(st, str(state) if state else "ended") if st else "ended"
        hint = _program_hint(exit_code, sig, text, py_last, why)
    summary = f"{words}: {exit_text}{node}"
    mem = _memory(usage)
    if mem and words == "out of memory":
        summary += f", {mem}"
    if py_last and words in ("failed", "ended"):
        summary += f"; Python: {py_last}"
    source, chosen = ("stderr", err) if err else (("stdout", out) if out else (None, []))
    return Diagnosis(summary, hint, tuple(chosen[-lines:] if lines > 0 else []), source)


def _program_hint(
    exit_code: int | None, sig: int | None, text: str, py_last: str | None, why: Reason | None
) -> str | None:
    """The hint for a task that ended by itself: what its exit status and last words say."""
    missing = _NO_FILE.search(text)
    path = (missing["path"] or missing["py"]) if missing else None
    if exit_code == 127 or _NOT_FOUND.search(text):
        found = _NOT_FOUND.search(text)
        cmd = found["cmd"] if found else path
        return (f"A command was not found{': ' + cmd if cmd else ''}. Check its name, that it "
                "is installed on the compute nodes, and that the cluster setup (modules, "
                "venv, PATH) is loaded for the task.")  # fmt: skip
    if exit_code == 126 or _PERMISSION.search(text):
        return ("Permission denied: a program is not executable (chmod +x) or a file is not "
                "readable/writable by the job's user.")  # fmt: skip
    if sig == 11 or _SEGV.search(text):
        return ("The program crashed (segmentation fault): a bug, a bad input, or an "
                "incompatible library; a core dump or a debugger shows where.")  # fmt: skip
    if sig == 6:
        return ("The program aborted (SIGABRT): a failed assertion, an uncaught C++ exception "
                "or memory corruption; see the last lines above.")  # fmt: skip
    if py_last is not None:
        kind = py_last.split(":", 1)[0].rsplit(".", 1)[-1]
        if kind in ("ModuleNotFoundError", "ImportError"):
            return (f"Python could not import a module ({py_last}): install it, or load the "
                    "environment that has it in the cluster setup.")  # fmt: skip
        if kind == "FileNotFoundError" and path:
            return f"A file the task needs is missing: {path}. {_INPUTS}"
        return f"The Python program raised {py_last}; the traceback is below."
    if path:
        return f"A file the task needs is missing: {path}. {_INPUTS}"
    if sig:
        return f"The program was killed by {_sig(sig)}."
    if why is not None and why.known and why.code not in ("NonZeroExitCode", "None"):
        return why.explanation + " " + why.action
    if exit_code:
        return f"The program exited with code {exit_code}; its last output lines are below."
    return None


_INPUTS = ("Check that it is among the task's inputs (or written by an earlier step) and that "
           "the path is relative to the task's work dir.")  # fmt: skip
