#!/usr/bin/env bash
# Install the peer tools for bench_submit.py, each in its OWN virtualenv (never the project's):
#   /tmp/bench-hpcrocket  hpc-rocket (client side)
#   /tmp/bench-pysqa      pysqa[remote] (client side)
#   /tmp/bench-submitit   submitit, run as the lab user on the lab host (it has no remote mode)
#   ~hpcblab/pysqa-venv   pysqa on the "cluster" for the lab user (its remote mode runs
#                         `python -m pysqa` there; Debian's PEP 668 forbids `pip install --user`)
# plus the small config files they read. Idempotent. Run as root on the lab host.
set -euo pipefail
LAB="${HPCBRIDGE_LAB_DIR:-/tmp/hpcbridge-lab}"
PORT="${HPCBRIDGE_LAB_SSH_PORT:-2822}"
U=hpcblab
H="$(getent passwd "$U" | cut -d: -f6)"

[ -x /tmp/bench-hpcrocket/bin/hpc-rocket ] || {
    python3 -m venv /tmp/bench-hpcrocket
    /tmp/bench-hpcrocket/bin/pip install -q hpc-rocket
}
[ -x /tmp/bench-pysqa/bin/python ] && /tmp/bench-pysqa/bin/python -c 'import pysqa, paramiko' 2>/dev/null || {
    python3 -m venv /tmp/bench-pysqa
    /tmp/bench-pysqa/bin/pip install -q 'pysqa[remote]'
}
[ -x /tmp/bench-submitit/bin/python ] && /tmp/bench-submitit/bin/python -c 'import submitit' 2>/dev/null || {
    /usr/bin/python3 -m venv /tmp/bench-submitit   # the system python: the lab user runs it
    /tmp/bench-submitit/bin/pip install -q submitit
    chmod -R a+rX /tmp/bench-submitit
}
runuser -u "$U" -- bash -c '[ -x ~/pysqa-venv/bin/python ] && ~/pysqa-venv/bin/python -c "import pysqa" 2>/dev/null || {
    /usr/bin/python3 -m venv ~/pysqa-venv && ~/pysqa-venv/bin/pip install -q pysqa; }'

# remote (cluster-side) pysqa config: a plain SLURM queue whose template runs the command
runuser -u "$U" -- bash -c 'mkdir -p ~/pysqa-config ~/pysqa-work && cat > ~/pysqa-config/queue.yaml <<YAML
queue_type: SLURM
queue_primary: debug
queues:
  debug: {cores_max: 4, cores_min: 1, run_time_max: 3600, script: slurm.sh}
YAML
cat > ~/pysqa-config/slurm.sh <<TPL
#!/bin/bash
#SBATCH --output=/dev/null
#SBATCH --job-name={{job_name}}
#SBATCH --chdir={{working_directory}}
#SBATCH --cpus-per-task={{cores}}
{{command}}
TPL
printf "#!/bin/bash\n#SBATCH --output=/dev/null\ntrue\n" > ~/bench-true.sh'

# local (client-side) pysqa config, REMOTE mode against the lab sshd; one dir per connection mode
for mode in percall continuous; do
    d=/tmp/bench-pysqa-config-$mode
    mkdir -p "$d" /tmp/bench-pysqa-work
    cont=false; [ "$mode" = continuous ] && cont=true
    cat > "$d/queue.yaml" <<YAML
queue_type: REMOTE
queue_primary: debug
ssh_host: 127.0.0.1
ssh_port: $PORT
ssh_username: $U
ssh_key: $LAB/ssh/id_ed25519
known_hosts: $LAB/ssh/known_hosts
ssh_remote_config_dir: $H/pysqa-config
ssh_remote_path: $H/pysqa-work
ssh_local_path: /tmp/bench-pysqa-work
ssh_continous_connection: $cont
python_executable: $H/pysqa-venv/bin/python
queues:
  debug: {cores_max: 4, cores_min: 1, run_time_max: 3600}
YAML
done

# hpc-rocket: its YAML has no port key (ConnectionData.port exists but the CLI never sets
# it: always 22), so the CLI reaches the lab sshd through a TCP relay 127.0.0.2:22 -> :PORT
# that bench_submit.py starts (socat) for the duration of the run.
cat > /tmp/bench-hpcrocket/rocket.yml <<YAML
host: 127.0.0.2
user: $U
private_keyfile: $LAB/ssh/id_ed25519
sbatch: bench-true.sh
YAML
echo "peers ready"
