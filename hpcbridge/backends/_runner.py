"""The process that wraps one local task attempt (``python -m hpcbridge.backends._runner``).

It is started detached (its own session and process group) so it outlives the submitting
process, runs the command without a shell, forwards signals, and leaves markers that any later
hpcbridge process can read: ``.hpcbridge/<attempt>/started`` and ``.../result`` (JSON with the
exit code or signal). The markers are what make a new session able to tell a finished task
from a running one without having been its parent.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hpcbridge-runner")
    parser.add_argument("--dir", required=True)
    parser.add_argument("--attempt", type=int, required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    work = Path(args.dir)
    meta = work / ".hpcbridge"
    marks = meta / str(args.attempt)
    marks.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)  # the task's env arrives in ours (never on the command line)
    env["HPCBRIDGE_ATTEMPT"] = str(args.attempt)

    with open(meta / f"attempt-{args.attempt}.out", "ab") as out, open(
        meta / f"attempt-{args.attempt}.err", "ab"
    ) as err:
        try:
            child = subprocess.Popen(
                command, cwd=work, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env
            )
        except OSError as exc:
            # e.g. command not found: record it like a shell would (127) with the reason.
            err.write(f"hpcbridge: cannot start {command[0]!r}: {exc.strerror}\n".encode())
            write_atomic(marks / "started", f"{time.time()}\n")
            write_atomic(
                marks / "result",
                json.dumps({"exit_code": 127, "signal": None, "ended": time.time()}),
            )
            return 127
        write_atomic(marks / "started", f"{time.time()}\n")
        write_atomic(marks / "node", socket.gethostname() + "\n")

        def forward(signum: int, _frame: object) -> None:
            try:
                child.send_signal(signum)
            except ProcessLookupError:
                pass

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP):
            signal.signal(sig, forward)
        while True:
            try:
                rc = child.wait()
                break
            except InterruptedError:  # pragma: no cover - PEP 475 retries, kept for safety
                continue
    result = {
        "exit_code": rc if rc >= 0 else None,
        "signal": -rc if rc < 0 else None,
        "ended": time.time(),
    }
    write_atomic(marks / "result", json.dumps(result))
    return rc if rc >= 0 else 128 - rc


if __name__ == "__main__":
    sys.exit(main())
