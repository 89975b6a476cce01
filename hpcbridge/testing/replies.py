"""What a :class:`~hpcbridge.testing.ReplayTransport` answers with and records.

:class:`Reply` (a replayed command's output, or the exception it raises), :class:`ReplayCall`
(one recorded transport call), the :data:`Responder` type of a rule's answer,
:class:`UnexpectedCommand`, :func:`normalize_argv` (the words rules match) and
:func:`run_locally` (a responder that really runs the call).
"""

from __future__ import annotations

import os
import posixpath
import re
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..transport.base import script_argv, script_input


class UnexpectedCommand(AssertionError):
    """A :class:`ReplayTransport` got a command (or script) that no rule answers, or
    :meth:`ReplayTransport.verify` found rules that were not used up.

    An ``AssertionError``, not an hpcbridge error: code under test that handles
    ``HpcBridgeError``/``OSError`` (an "outcome unknown" path, say) must not swallow it. Code
    that catches every ``Exception`` still can, which is why every such call is also kept in
    ``transport.unmatched`` and :meth:`~ReplayTransport.verify` reports it again."""


@dataclass(frozen=True)
class Reply:
    """What a replayed command prints and how it exits, or the exception it raises instead
    (``CommandTimeout``, ``TransportError``: the transport's own failures)."""

    stdout: str = ""
    stderr: str = ""
    exit_status: int = 0
    raises: BaseException | None = None

    @classmethod
    def from_files(cls, directory: str | os.PathLike[str], name: str) -> Reply:
        """A captured reply. ``name`` with a suffix (``squeue_running.txt``) is a file of
        stdout, exit status 0; without one (``err_sbatch_invalid_partition``) it is the triple
        ``name.stdout`` / ``name.stderr`` / ``name.rc``, each optional (empty, 0)."""
        base = Path(directory)
        whole = base / name
        if whole.is_file():
            return cls(stdout=whole.read_text(encoding="utf-8"))
        parts = {ext: base / f"{name}.{ext}" for ext in ("stdout", "stderr", "rc")}
        if not any(p.is_file() for p in parts.values()):
            raise FileNotFoundError(
                f"no capture {name!r} in {base}: neither {whole.name} nor "
                f"{name}.stdout/.stderr/.rc exist"
            )

        def text(ext: str) -> str:
            p = parts[ext]
            return p.read_text(encoding="utf-8") if p.is_file() else ""

        rc = text("rc").strip()
        return cls(stdout=text("stdout"), stderr=text("stderr"), exit_status=int(rc or 0))


@dataclass(frozen=True)
class ReplayCall:
    """One recorded transport call.

    ``method`` is the Transport method (``"run"``, ``"run_script"``, ``"put"``, ``"get"``,
    ``"read_text"``, ``"write_text"``, ``"makedirs"``, ``"exists"``, ``"list_files"``,
    ``"expand"``, ``"connect"``, ``"close"``). For commands, ``argv`` is exactly what the caller
    passed (``("bash", "-s")`` for ``run_script``, whose text is ``script``) and ``command``
    is what rules match: ``argv`` without a leading ``env -u VAR ...`` and without the
    directory of the program (see :func:`normalize_argv`). For file operations ``path`` is the
    expanded remote path and ``local`` the local one (put/get)."""

    method: str
    argv: tuple[str, ...] = ()
    command: tuple[str, ...] = ()
    stdin: str | bytes | None = None
    script: str | None = None
    timeout: float | None = None
    what: str | None = None
    path: str | None = None
    local: Path | None = None


Responder = Reply | str | Callable[[ReplayCall], Reply | str]
"""A rule's answer: a :class:`Reply`, a string (stdout, exit 0), or a callable that gets the
:class:`ReplayCall` and returns either."""


_ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def normalize_argv(argv: Sequence[str]) -> tuple[str, ...]:
    """The words a :class:`ReplayTransport` rule matches: ``argv`` without a leading
    ``env`` wrapper (``-u NAME``, ``--unset=NAME``, ``-i``, ``NAME=value``, ``--``) and with
    the program reduced to its base name (``/opt/slurm/bin/squeue`` -> ``squeue``), so rules
    keep matching when commands gain an environment-scrubbing prefix or ``slurm_bin_dir``."""
    items = list(argv)
    if items and posixpath.basename(items[0]) == "env":
        i = 1
        while i < len(items):
            arg = items[i]
            if arg in ("-u", "--unset"):
                i += 2
            elif arg.startswith("--unset=") or (arg.startswith("-u") and len(arg) > 2):
                i += 1
            elif arg in ("-i", "--ignore-environment", "-") or _ENV_ASSIGNMENT.match(arg):
                i += 1
            elif arg == "--":
                i += 1
                break
            else:
                break
        items = items[i:]
    if items:
        items[0] = posixpath.basename(items[0])
    return tuple(items)


def run_locally(
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> Callable[[ReplayCall], Reply]:
    """A responder that really runs the call on this machine: a script as ``run_script`` runs it, a
    command as its argv (no shell). For the few tests that must execute hpcbridge's generated
    shell (the bulk submission script against a fake ``sbatch`` in ``slurm_bin_dir``, the
    marker reader against real marker files)::

        transport.on_script(run_locally(env={"PATH": f"{fake_bin}:/usr/bin:/bin"}))
    """

    def respond(call: ReplayCall) -> Reply:
        argv = list(script_argv(False)) if call.script is not None else list(call.argv)
        data = script_input(call.script) if call.script is not None else call.stdin
        res = subprocess.run(  # noqa: S603 - argv list, no shell=True
            argv, input=data.encode() if isinstance(data, str) else data, capture_output=True,
            cwd=cwd, env=dict(env) if env is not None else None, timeout=timeout, check=False,
        )  # fmt: skip
        return Reply(res.stdout.decode(errors="replace"), res.stderr.decode(errors="replace"),
                     res.returncode)  # fmt: skip

    return respond
