"""submitit's job arrays as a peer for bench_submit.py: ``executor.map_array`` of N calls,
run as the lab user on the lab host (submitit submits with a local ``sbatch``; it has no
remote mode). Prints one JSON line: seconds spent in map_array, the job ids.

    runuser -u hpcblab -- /tmp/bench-submitit/bin/python submitit_driver.py N FOLDER
"""

from __future__ import annotations

import json
import sys
import time

import submitit


def main() -> None:
    n, folder = int(sys.argv[1]), sys.argv[2]
    ex = submitit.SlurmExecutor(folder=folder)
    ex.update_parameters(time=2, partition="debug", cpus_per_task=1, array_parallelism=n)
    t0 = time.perf_counter()
    jobs = ex.map_array(abs, range(n))  # pickles N calls into the folder, then one sbatch --array
    elapsed = time.perf_counter() - t0
    print(json.dumps({"seconds": elapsed, "job_ids": [j.job_id for j in jobs]}))


if __name__ == "__main__":
    main()
