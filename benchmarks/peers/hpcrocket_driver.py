"""Submit N jobs with hpc-rocket as a library, in one process (run with the peer's own venv:
/tmp/bench-hpcrocket/bin/python). hpc-rocket's ConnectionData has a ``port`` field that its
CLI/YAML never sets; as a library we can pass the lab port directly. Prints one JSON line."""

import json
import sys
import time

from hpcrocket.core.slurmcontroller import SlurmController
from hpcrocket.ssh.connectiondata import ConnectionData
from hpcrocket.ssh.sshexecutor import SSHExecutor

n, port, key, script = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
t0 = time.perf_counter()
ex = SSHExecutor(ConnectionData(hostname="127.0.0.1", username="hpcblab", keyfile=key, port=port))
ex.connect()
ctl = SlurmController(ex)
ids = [ctl.submit(script).jobid for _ in range(n)]
elapsed = time.perf_counter() - t0
ex.close()
print(json.dumps({"seconds": elapsed, "job_ids": ids}))
