"""Test helpers: fakes for the two seams where hpcbridge meets the outside world.

Public and stable, for hpcbridge's own tests and for yours (as structlog's ``testing`` module
or httpx's ``MockTransport``). Nothing here touches a cluster, a network or ``subprocess``
(except :func:`run_locally`, which you call on purpose).

:class:`FakeBackend`
    A scripted scheduler behind the :class:`~hpcbridge.backends.base.Backend` protocol. Say
    what each attempt's job looks like at each poll (``set_state``, ``script``), make a
    submission fail (permanently, transiently, or with an unknown outcome), a poll raise, a
    job vanish, outputs appear; every call is recorded in ``backend.calls``. Job ids are
    allocated sequentially (1000, 1001, ...). Use it to drive the sync cycle without Slurm::

        backend = FakeBackend(script={"sim": [TaskState.RUNNING, TaskState.SUCCEEDED]})
        backend.set_outputs("sim", {"result.json": "{}"})     # keys: task name or task id
        runtime = Runtime(config, registry, backends={"lab": backend})
        Service(runtime).submit(command=["python3", "sim.py"], name="sim", cluster="lab",
                                outputs=["*.json"])           # job 1000, queued
        sync_cluster(runtime, "lab")                          # running
        sync_cluster(runtime, "lab")                          # succeeded, result.json fetched
        assert [c.method for c in backend.calls] == [
            "prepare", "submit", "poll", "poll", "fetch_outputs"]

:class:`ReplayTransport`
    Replays captured scheduler output behind the :class:`~hpcbridge.transport.base.Transport`
    protocol, so the real :class:`~hpcbridge.backends.slurm.SlurmBackend` runs unchanged.
    Rules map an argv *prefix* to a reply (stdout, stderr, exit status, or an exception);
    replies can be loaded from the captures in ``tests/data/slurm/<version>/``. An argv no
    rule matches raises :class:`UnexpectedCommand` (an ``AssertionError``: a test failure, never
    an empty reply). Files live in memory. Every call is recorded in ``transport.calls``::

        data = Path("tests/data/slurm/22.05")
        transport = ReplayTransport(data)
        transport.on("squeue", file="hpcb-squeue-me-live.txt")
        transport.on("sbatch", file="err_sbatch_invalid_partition")  # .stdout/.stderr/.rc
        backend = SlurmBackend(cluster_config, transport)
        infos = backend.poll(requests)
        assert [c.command[0] for c in transport.calls] == ["date", "squeue"]

Column helpers (:func:`split_columns`, :func:`join_columns`, :func:`reorder_columns`) turn
captures made with another field order (``scripts/lab/capture.sh``) into the exact line shape
of hpcbridge's own queries (``hpcbridge.slurm.SQUEUE_FIELDS`` / ``SACCT_FIELDS``).

The package's modules, each importable on its own (everything above is re-exported here):

:mod:`hpcbridge.testing.fake_backend`
    :class:`FakeBackend`.
:mod:`hpcbridge.testing.fake_state`
    What it is scripted with and records: :data:`ABSENT`, :class:`FakeState`,
    :data:`ScriptItem`, :data:`Key`, :class:`FakeCall`, :class:`FakeJob`.
:mod:`hpcbridge.testing.replay`
    :class:`ReplayTransport`.
:mod:`hpcbridge.testing.replies`
    What it answers with and records: :class:`Reply`, :class:`ReplayCall`,
    :data:`Responder`, :class:`UnexpectedCommand`, :func:`normalize_argv`,
    :func:`run_locally`.
:mod:`hpcbridge.testing.columns`
    :func:`split_columns`, :func:`join_columns`, :func:`reorder_columns`.
"""

from __future__ import annotations

from .columns import join_columns, reorder_columns, split_columns
from .fake_backend import FakeBackend
from .fake_backend import SubmitFailure as SubmitFailure
from .fake_state import ABSENT, FakeCall, FakeJob, FakeState
from .fake_state import Key as Key
from .fake_state import ScriptItem as ScriptItem
from .replay import ReplayTransport
from .replies import ReplayCall, Reply, UnexpectedCommand, normalize_argv, run_locally
from .replies import Responder as Responder

__all__ = [
    "ABSENT",
    "FakeBackend",
    "FakeCall",
    "FakeJob",
    "FakeState",
    "Reply",
    "ReplayCall",
    "ReplayTransport",
    "UnexpectedCommand",
    "join_columns",
    "normalize_argv",
    "reorder_columns",
    "run_locally",
    "split_columns",
]
