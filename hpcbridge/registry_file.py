"""The registry file itself: where it is, which schema it must have, how long to wait for
its lock. Plain values and ``os.path``, nothing else imported, so that ``tasks list`` can
find and check the file before (or instead of) importing ``config`` and ``registry``.

``config.resolve_db_path`` and ``config.default_db_path`` are these, as ``pathlib.Path``;
``schema.MIGRATIONS`` pairs ``MIGRATION_NAMES`` with their functions.
"""

from __future__ import annotations

import os
import sys

APP = "hpcbridge"

# The registry's migrations, in order (``schema.MIGRATIONS`` pairs each with its function):
# a file that has recorded all of them has the schema of this hpcbridge.
MIGRATION_NAMES: tuple[str, ...] = (
    "001_initial",
    "002_scheduler_budget",
    "003_ordered_indexes",
    "004_leases",
    "005_monitoring",
    "006_projects_metadata",
    "007_events_outbox",
)

# How long a connection waits for another process's lock before SQLite reports "busy".
BUSY_TIMEOUT_MS = 30_000


def user_dir(kind: str) -> str:
    """platformdirs' user config (``kind="config"``) or data dir of hpcbridge. On Linux
    computed here as platformdirs does it (the XDG variable when it holds an absolute path,
    else ~/.config or ~/.local/share; a relative $HOME counts as unset), because importing
    platformdirs costs ~10% of a CLI command's start-up (it imports tempfile, shutil,
    random, bz2, lzma); tests/unit/test_config_paths.py checks both agree. Elsewhere platformdirs
    answers."""
    if sys.platform.startswith("linux"):
        var, fallback = ("XDG_CONFIG_HOME", ".config") if kind == "config" else ("XDG_DATA_HOME", ".local/share")
        base = os.environ.get(var, "")
        if not os.path.isabs(base):
            home = os.environ.get("HOME", "")
            if not os.path.isabs(home):
                import pwd

                home = pwd.getpwuid(os.getuid()).pw_dir
            base = os.path.join(home, fallback)
        return os.path.join(base, APP)
    import platformdirs

    return platformdirs.user_config_dir(APP) if kind == "config" else platformdirs.user_data_dir(APP)


def default_db_file() -> str:
    return os.path.join(user_dir("data"), "registry.db")


def db_file(explicit: str | os.PathLike[str] | None = None) -> str:
    """The registry's path: ``explicit`` (``--db``), else ``$HPCBRIDGE_DB``, else the user
    data dir's ``registry.db``; ``~`` expanded."""
    if explicit:
        return os.path.expanduser(os.fspath(explicit))
    env = os.environ.get("HPCBRIDGE_DB")
    return os.path.expanduser(env) if env else default_db_file()
