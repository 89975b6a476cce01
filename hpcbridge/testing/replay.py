"""ReplayTransport: captured scheduler output behind the Transport protocol.

Rules map an argv prefix (or a script's text) to a :class:`~hpcbridge.testing.replies.Reply`;
the replies, recorded calls and :func:`~hpcbridge.testing.replies.run_locally` are in
:mod:`hpcbridge.testing.replies`. The package docstring (:mod:`hpcbridge.testing`) shows it
behind the real SlurmBackend.
"""

from __future__ import annotations

import os
import posixpath
import shlex
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from ..errors import CommandFailed, TransportError, UsageError
from ..models import CommandResult
from ..transport.base import (
    CommandStream,
    RemoteFileError,
    RemoteFileNotFound,
    TransportStats,
    check_argv,
    expand_path,
    script_argv,
    tail_bytes,
)
from .replies import ReplayCall, Reply, Responder, UnexpectedCommand, normalize_argv


@dataclass
class _Rule:
    kind: Literal["run", "script"]
    prefix: tuple[str, ...]
    has: tuple[str, ...]
    contains: tuple[str, ...]
    responder: Responder
    times: int | None
    used: int = 0

    def live(self) -> bool:
        return self.times is None or self.used < self.times

    def matches(self, call: ReplayCall) -> bool:
        if self.kind == "script":
            text = call.script or ""
            return call.method == "run_script" and all(c in text for c in self.contains)
        cmd = call.command
        if call.method != "run" or cmd[: len(self.prefix)] != self.prefix:
            return False
        return all(any(a == h or a.startswith(h) for a in cmd) for h in self.has)

    def describe(self) -> str:
        if self.kind == "script":
            what = f"script containing {list(self.contains)}" if self.contains else "any script"
        else:
            what = shlex.join(self.prefix) + (f" (with {list(self.has)})" if self.has else "")
        left = "" if self.times is None else f", used {self.used}/{self.times}"
        return what + left


class ReplayTransport:
    """A Transport that answers commands from rules and keeps files in memory.

    Rules are tried in the order they were added; the first live one that matches answers (a
    rule with ``times=n`` retires after n answers, so ``on(p, a, times=1)`` then ``on(p, b)``
    replies a once, then b for good). No match raises :class:`UnexpectedCommand`.

    Parameters:
        data_dir: where ``file=`` names are looked up (e.g. ``tests/data/slurm/22.05``).
        home: the remote home directory ``~`` and relative paths resolve against.
        utc_offset: the answer to ``date +%z`` (how SlurmBackend learns the cluster's zone)
            when no rule of yours answers it; ``None`` leaves that command unanswered too.
        description: the ``description`` attribute (shown in error messages).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        home: str = "/home/hpcb",
        utc_offset: str | None = "+0000",
        description: str = "replay",
    ) -> None:
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.home = home
        self.description = description
        self.stats = TransportStats()
        self.calls: list[ReplayCall] = []
        self.unmatched: list[ReplayCall] = []
        self.files: dict[str, bytes] = {}  # absolute remote path -> content
        self.modes: dict[str, int] = {}
        self.dirs: set[str] = set()
        self.closed = False
        self._rules: list[_Rule] = []
        self._fallback: list[_Rule] = []
        self._failures: dict[str, list[list[Any]]] = {}
        self._lock = threading.RLock()
        if utc_offset is not None:
            self._fallback.append(_Rule("run", ("date", "+%z"), (), (), Reply(utc_offset + "\n"),
                                        None))  # fmt: skip

    # -- rules ----------------------------------------------------------------------------

    def on(
        self,
        prefix: str | Sequence[str],
        reply: Responder | None = None,
        *,
        file: str | None = None,
        stdout: str = "",
        stderr: str = "",
        exit_status: int = 0,
        raises: BaseException | None = None,
        has: Sequence[str] = (),
        times: int | None = None,
    ) -> ReplayTransport:
        """Answer ``run(argv)`` when the normalized argv starts with ``prefix`` (a string is
        split like a shell line: ``"sacct --parsable2"``) and, for each string in ``has``, some
        argument equals it or starts with it (``has=["--name="]``).

        The answer is ``reply`` (a Reply, a stdout string, or a callable), or the capture
        ``file`` under ``data_dir`` (see :meth:`Reply.from_files`), or else built from
        ``stdout``/``stderr``/``exit_status``/``raises``. Returns self, for chaining."""
        words = tuple(shlex.split(prefix)) if isinstance(prefix, str) else tuple(prefix)
        if not words:
            raise ValueError("a rule needs a non-empty argv prefix")
        rule = _Rule("run", words, tuple(has), (),
                     self._responder(reply, file, stdout, stderr, exit_status, raises), times)  # fmt: skip
        with self._lock:
            self._rules.append(rule)
        return self

    def on_script(
        self,
        reply: Responder | None = None,
        *,
        contains: str | Sequence[str] = (),
        file: str | None = None,
        stdout: str = "",
        stderr: str = "",
        exit_status: int = 0,
        raises: BaseException | None = None,
        times: int | None = None,
    ) -> ReplayTransport:
        """Answer ``run_script(script)`` when the script contains every string of ``contains``
        (none: any script). A callable ``reply`` sees the script as ``call.script``: that is
        how a test writes the bulk submission report for the tokens it submitted, or runs
        the script for real with :func:`run_locally`. Returns self."""
        needles = (contains,) if isinstance(contains, str) else tuple(contains)
        rule = _Rule("script", (), (), needles,
                     self._responder(reply, file, stdout, stderr, exit_status, raises), times)  # fmt: skip
        with self._lock:
            self._rules.append(rule)
        return self

    def fail(self, method: str, error: BaseException | None = None, *,
             times: int | None = 1) -> ReplayTransport:  # fmt: skip
        """The next ``times`` calls (None: all) of a file method (``put``, ``get``,
        ``read_text``, ``write_text``, ``makedirs``, ``exists``, ``list_files``, ``expand``)
        or of ``connect`` raise ``error`` (default: a ``TransportError``). Commands fail
        through their rules (``raises=``). Returns self."""
        if method not in _FILE_METHODS | {"connect"}:
            raise ValueError(f"fail() takes a file method or 'connect', got {method!r}; "
                             "make commands fail with on(..., raises=...)")  # fmt: skip
        exc = error or TransportError(f"{self.description}: {method} failed: connection lost")
        with self._lock:
            self._failures.setdefault(method, []).append([exc, times])
        return self

    def clear_rules(self) -> None:
        """Forget every rule (the ``date +%z`` fallback stays)."""
        with self._lock:
            self._rules.clear()

    # -- inspection -----------------------------------------------------------------------

    def commands(self) -> list[tuple[str, ...]]:
        """The normalized argv of every ``run`` call, in order."""
        return [c.command for c in self.calls if c.method == "run"]

    def calls_to(self, program: str) -> list[ReplayCall]:
        """The ``run`` calls of one program (base name, e.g. ``"sacct"``)."""
        return [c for c in self.calls if c.method == "run" and c.command[:1] == (program,)]

    @property
    def scripts(self) -> list[str]:
        """The text of every ``run_script`` call, in order."""
        return [c.script or "" for c in self.calls if c.method == "run_script"]

    def verify(self) -> None:
        """Raise :class:`UnexpectedCommand` if a call matched no rule, or a rule added with
        ``times=n`` answered fewer than n calls (call it at the end of a test)."""
        with self._lock:
            problems = [f"unanswered: {_show(c)}" for c in self.unmatched]
            problems += [f"not used up: {r.describe()}" for r in self._rules
                         if r.times is not None and r.used < r.times]  # fmt: skip
        if problems:
            raise UnexpectedCommand("ReplayTransport.verify():\n  " + "\n  ".join(problems))

    # -- Transport protocol: commands ----------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: str | bytes | None = None,
        timeout: float | None = None,
        check: bool = False,
        what: str | None = None,
    ) -> CommandResult:
        items = check_argv(argv)  # the real transports' validation: lists, str, no NUL
        call = ReplayCall("run", argv=items, command=normalize_argv(items), stdin=stdin,
                          timeout=timeout, what=what)  # fmt: skip
        return self._answer(call, check)

    def run_script(
        self,
        script: str,
        *,
        timeout: float | None = None,
        check: bool = False,
        what: str | None = None,
    ) -> CommandResult:
        argv = script_argv(False)
        call = ReplayCall("run_script", argv=argv, command=argv, script=script,
                          timeout=timeout, what=what)  # fmt: skip
        return self._answer(call, check)

    def open_stream(
        self,
        argv: Sequence[str],
        *,
        idle_timeout: float | None = None,
        what: str | None = None,
    ) -> CommandStream:
        """Not replayed: a stream converses with the command, which a fixed reply cannot.
        Raises ``UsageError``; test streaming code over ``LocalTransport`` instead."""
        check_argv(argv)
        raise UsageError("ReplayTransport does not replay open_stream (e.g. the batched "
                         "output fetch)", hint="use LocalTransport for code that streams")

    def connect(self) -> None:
        """What SSHTransport.connect does: nothing here but recording (and ``fail``)."""
        self._file_op("connect", None)

    # -- Transport protocol: files ---------------------------------------------------------

    def expand(self, remote: str) -> str:
        path = expand_path(remote, self.home)
        self._file_op("expand", path)
        return path

    def put(self, local: Path, remote: str) -> None:
        dest = expand_path(remote, self.home)
        source = Path(local)
        self._file_op("put", dest, source)
        with self._lock:
            if source.is_dir():
                self._add_dir(dest)
                for dirpath, _dirnames, filenames in os.walk(source, followlinks=True):
                    rel = Path(dirpath).relative_to(source).as_posix()
                    base = dest if rel == "." else posixpath.join(dest, rel)
                    self._add_dir(base)
                    for name in filenames:
                        self._store(posixpath.join(base, name), (Path(dirpath) / name).read_bytes())
            elif source.is_file():
                self._store(dest, source.read_bytes())
            else:
                raise RemoteFileNotFound(str(source), where="put (local source)")

    def get(self, remote: str, local: Path) -> None:
        path = expand_path(remote, self.home)
        self._file_op("get", path, Path(local))
        with self._lock:
            if path not in self.files:
                raise RemoteFileNotFound(path, where=f"get on {self.description}")
            data = self.files[path]
        target = Path(local)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    def list_files(self, remote_dir: str) -> list[str]:
        root = expand_path(remote_dir, self.home).rstrip("/") or "/"
        self._file_op("list_files", root)
        with self._lock:
            if root in self.files:
                raise RemoteFileError(f"list_files on {self.description}: not a directory: {root}",
                                      path=root)  # fmt: skip
            if not self._is_dir(root):
                raise RemoteFileNotFound(root, where=f"list_files on {self.description}")
            prefix = root if root.endswith("/") else root + "/"
            return sorted(p[len(prefix):] for p in self.files if p.startswith(prefix))

    def read_text(self, remote: str, *, tail_lines: int | None = None) -> str:
        path = expand_path(remote, self.home)
        self._file_op("read_text", path)
        with self._lock:
            if path not in self.files:
                raise RemoteFileNotFound(path, where=f"read_text on {self.description}")
            data = self.files[path]
        if tail_lines is not None:
            data = tail_bytes(data, tail_lines)
        return data.decode("utf-8", errors="replace")

    def write_text(self, remote: str, text: str, *, mode: int = 0o644) -> None:
        path = expand_path(remote, self.home)
        self._file_op("write_text", path)
        with self._lock:
            self._store(path, text.encode("utf-8"), mode)

    def makedirs(self, remote: str) -> None:
        path = expand_path(remote, self.home)
        self._file_op("makedirs", path)
        with self._lock:
            if path in self.files:
                raise RemoteFileError(f"makedirs on {self.description}: file exists: {path}",
                                      path=path)  # fmt: skip
            self._add_dir(path)

    def exists(self, remote: str) -> bool:
        path = expand_path(remote, self.home)
        self._file_op("exists", path)
        with self._lock:
            return path in self.files or self._is_dir(path)

    def close(self) -> None:
        with self._lock:
            self.calls.append(ReplayCall("close"))
            self.closed = True

    # -- internals ------------------------------------------------------------------------

    def _responder(self, reply: Responder | None, file: str | None, stdout: str, stderr: str,
                   exit_status: int, raises: BaseException | None) -> Responder:  # fmt: skip
        if reply is not None and file is not None:
            raise ValueError("give either a reply or a file, not both")
        if reply is not None:
            return reply
        if file is not None:
            if self.data_dir is None:
                raise ValueError("file= needs ReplayTransport(data_dir=...)")
            return Reply.from_files(self.data_dir, file)  # read now: a typo fails at once
        return Reply(stdout, stderr, exit_status, raises)

    def _answer(self, call: ReplayCall, check: bool) -> CommandResult:
        with self._lock:
            self.calls.append(call)
            self.stats.add(round_trips=1)
            rule = next((r for r in [*self._rules, *self._fallback]
                         if r.live() and r.matches(call)), None)  # fmt: skip
            if rule is None:
                self.unmatched.append(call)
                known = "\n    ".join(r.describe() for r in self._rules) or "(none)"
                raise UnexpectedCommand(
                    f"ReplayTransport: no rule answers {_show(call)}\n  rules:\n    {known}\n"
                    "  add one with transport.on(prefix, ...) or transport.on_script(...)"
                )
            rule.used += 1
            responder = rule.responder
        answer = responder(call) if callable(responder) else responder
        reply = Reply(stdout=answer) if isinstance(answer, str) else answer
        if reply.raises is not None:
            raise reply.raises
        result = CommandResult(call.argv, reply.exit_status, reply.stdout, reply.stderr)
        if check and not result.ok:
            raise CommandFailed(call.argv, result.exit_status, result.stderr, what=call.what,
                                stdout=result.stdout)  # fmt: skip
        return result

    def _file_op(self, method: str, path: str | None, local: Path | None = None) -> None:
        with self._lock:
            self.calls.append(ReplayCall(method, path=path, local=local))
            pending = self._failures.get(method)
            if pending:
                entry = pending[0]
                if entry[1] is not None:
                    entry[1] -= 1
                    if entry[1] <= 0:
                        pending.pop(0)
                raise entry[0]

    def _store(self, path: str, data: bytes, mode: int = 0o644) -> None:
        if self._is_dir(path):
            raise RemoteFileError(f"{self.description}: is a directory: {path}", path=path)
        self._add_dir(posixpath.dirname(path))
        self.files[path] = data
        self.modes[path] = mode

    def _add_dir(self, path: str) -> None:
        while path and path not in ("/", "."):
            self.dirs.add(path)
            path = posixpath.dirname(path)

    def _is_dir(self, path: str) -> bool:
        if path == "/" or path in self.dirs:
            return True
        prefix = path.rstrip("/") + "/"
        return any(p.startswith(prefix) for p in self.files)


_FILE_METHODS: Final = frozenset(
    {"put", "get", "read_text", "write_text", "makedirs", "exists", "list_files", "expand"}
)


def _show(call: ReplayCall) -> str:
    if call.method == "run_script":
        head = (call.script or "").strip().splitlines()[:3]
        return f"run_script (what={call.what!r}) starting {head!r}"
    if call.method == "run":
        return f"`{shlex.join(call.argv)}` (what={call.what!r})"
    return f"{call.method}({call.path!r})"


if TYPE_CHECKING:
    # mypy proves the fake satisfies the protocol: a missing or mistyped member fails here.
    from ..transport.base import Transport

    _transport_check: Transport = ReplayTransport()
