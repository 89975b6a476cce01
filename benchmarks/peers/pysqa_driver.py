"""Submit N jobs with pysqa in REMOTE mode (run with the peer's own venv: /tmp/bench-pysqa/bin/python).

mode "raw": ``submit_job(command="sbatch ...")`` -- what pysqa 1.1.1's RemoteQueueAdapter
actually does: it executes ``command`` verbatim on the login node over SSH (it never calls its
own ``_submit_command``), so the caller passes the sbatch line.
mode "remote": the designed remote path, ``python -m pysqa --submit ...`` run on the cluster by
pysqa's own ``_submit_command`` (needs pysqa in a venv on the cluster; renders the queue
template there and calls sbatch).
Prints one JSON line."""

import json
import sys
import time
import warnings

from pysqa import QueueAdapter

n, config_dir, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
warnings.simplefilter("ignore")
t0 = time.perf_counter()
qa = QueueAdapter(directory=config_dir)
ad = qa._adapter
ids = []
for i in range(n):
    if mode == "raw":
        cmd = "sbatch --parsable --output=/dev/null --wrap true"
    else:
        cmd = ad._submit_command(queue="debug", job_name=f"pysqa{i}",
                                 working_directory="/home/hpcblab/pysqa-work", cores=1,
                                 command_str="true")
    ids.append(str(ad.submit_job(command=cmd)))
elapsed = time.perf_counter() - t0
print(json.dumps({"seconds": elapsed, "job_ids": ids}))
