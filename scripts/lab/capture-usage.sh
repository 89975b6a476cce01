#!/usr/bin/env bash
# Capture what hpcbridge.slurm.usage, hpcbridge.slurm.queue and hpcbridge.diagnostics read:
# sacct with step lines, sstat of running steps, squeue --start / pending queue with
# priorities, and the output files of real failures. Writes tests/data/slurm/<version>/
# usage_* and queue_* (see tests/data/slurm/COMMANDS.md, "Usage, live usage, queue insight").
# Needs a running lab (scripts/slurm-lab up) and root; jobs run and queries are made as the
# lab user, as hpcbridge does over SSH.
#
#   scripts/lab/capture-usage.sh [OUTDIR] [SCENARIO...]
#
# Scenarios (default: all): usage fail queue timeout config. Each one takes the lab lock
# (/tmp/hpcbridge-lab.lock) for itself only, so other lab users run in between, and cancels
# its jobs before it lets go. The query argv comes from the Python builders themselves.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
LOCK=/tmp/hpcbridge-lab.lock
PY="$REPO/.venv/bin/python"
[ -x "$PY" ] || { echo "capture-usage: needs $REPO/.venv (python3 -m venv .venv && .venv/bin/pip install -e .)" >&2; exit 1; }
VER="$(slurmd -V | awk '{print $2}')"
OUT="${1:-$REPO/tests/data/slurm/$(echo "$VER" | cut -d. -f1,2)}"
[ $# -gt 0 ] && shift
OUT="$(realpath -m "$OUT")"
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(usage fail queue timeout config)

if [ -z "${CAPTURE_USAGE_ONE:-}" ]; then
    for s in "${SCENARIOS[@]}"; do
        CAPTURE_USAGE_ONE=1 flock "$LOCK" "$0" "$OUT" "$s"
    done
    exit 0
fi

"$REPO/scripts/slurm-lab" up >/dev/null   # idempotent: starts what is not running
LAB_USER=hpcblab
WORK="/home/$LAB_USER/hpcbridge/capture-usage"
mkdir -p "$OUT"
CMDLOG="$OUT/usage_commands.log"
runuser -u "$LAB_USER" -- mkdir -p "$WORK"
cd "$WORK"

say() { echo "capture-usage: $*" >&2; }
U() { runuser -u "$LAB_USER" -- "$@"; }
sub() { U sbatch --parsable "$@"; }
MINE=()
cleanup() { [ ${#MINE[@]} -eq 0 ] || scancel "${MINE[@]}" 2>/dev/null || true; }
trap cleanup EXIT

# argv of a Python builder, e.g. `build usage.sacct_usage_argv 12 13` -> array BUILT
build() {
    local fn="$1"; shift
    mapfile -d '' -t BUILT < <("$PY" - "$fn" "$@" <<'EOF'
import importlib, sys
mod, _, name = sys.argv[1].rpartition(".")
fn = getattr(importlib.import_module("hpcbridge.slurm." + mod), name)
args = sys.argv[2:]
argv = fn(args) if args else fn()
sys.stdout.write("\0".join(argv) + "\0")
EOF
)
}
# run CMD as the lab user: stdout -> FILE, the command line -> usage_commands.log
q() {
    local file="$1"; shift
    printf '%s\t%s\n' "$file" "$*" >> "$CMDLOG"
    U "$@" > "$OUT/$file"
}
# stdout, stderr and exit code of CMD
qerr() {
    local base="$1"; shift
    local rc=0
    printf '%s.{stdout,stderr,rc}\t%s\n' "$base" "$*" >> "$CMDLOG"
    U "$@" > "$OUT/$base.stdout" 2> "$OUT/$base.stderr" || rc=$?
    echo "$rc" > "$OUT/$base.rc"
}
wait_until() {
    local what="$1" secs="$2"; shift 2
    local end=$(( $(date +%s) + secs ))
    until "$@"; do
        [ "$(date +%s)" -lt "$end" ] || { say "timeout waiting for $what"; squeue -t all >&2; return 1; }
        sleep 0.5
    done
}
state() { squeue -h -t all -j "$1" -o %T 2>/dev/null | head -1; }
is_state() { local s; s="$(state "$1")"; shift; local x; for x in "$@"; do [ "$s" = "$x" ] && return 0; done; return 1; }
ended() { is_state "$1" COMPLETED FAILED CANCELLED TIMEOUT OUT_OF_MEMORY PREEMPTED NODE_FAIL DEADLINE; }
# sacct's rows are final: no 22.05 transient "allocation"/PENDING row, state not RUNNING
settled() {
    local rows; rows="$(sacct -n -X -P -j "$1" -o JobName,State 2>/dev/null)"
    [ -n "$rows" ] && ! grep -qE '^allocation\||\|(PENDING|RUNNING|COMPLETING)' <<<"$rows"
}
# the batch (or named) step of a running job reports at least MIN kilobytes of RSS
rss_at_least() {
    local v; v="$(sstat -n -P -a -j "$1" -o JobID,MaxRSS 2>/dev/null | awk -F'|' -v s="$2" '$1 ~ s {print $2}' | head -1)"
    [ -n "$v" ] && [ "$("$PY" -c 'import sys; from hpcbridge.slurm.usage import parse_size; print(parse_size(sys.argv[1], unit="K"))' "$v")" -ge "$3" ]
}

# the job's steps together report at least SECONDS of CPU time
cpu_at_least() {
    local t; t="$(sstat -n -P -a -j "$1" -o TRESUsageInTot 2>/dev/null | tr ',' '\n' | sed -n 's/^cpu=//p' | head -1)"
    [ -n "$t" ] && [ "$("$PY" -c 'import sys; from hpcbridge.slurm.usage import parse_duration; print(int(parse_duration(sys.argv[1]) or 0))' "$t")" -ge "$2" ]
}

cat > "$WORK/hog.py" <<'EOF'
# hog.py MB SECONDS: hold MB megabytes (every page written), then keep one CPU busy.
import sys, time
mb, secs = int(sys.argv[1]), float(sys.argv[2])
block = bytearray(b"\x01") * (mb << 20)
end = time.time() + secs
while time.time() < end:
    pass
print(f"held {mb} MB for {secs} s", flush=True)
EOF
chmod 644 "$WORK/hog.py"

# ------------------------------------------------------------------ scenarios
s_usage() {
    local spin steps cancel short
    # ~300 MB and one busy CPU for 12 s, inside a 500 MB / 1 CPU / 5 min allocation.
    spin="$(sub -J hb-usage-spin -c1 --mem=500M --time=5 -o "$WORK/spin.out" --wrap "python3 $WORK/hog.py 300 12")"
    # a batch step plus an srun step with two tasks of ~100 MB each, --mem-per-cpu
    steps="$(sub -J hb-usage-steps -n2 --mem-per-cpu=200M --time=5 -o "$WORK/steps.out" --wrap "python3 $WORK/hog.py 20 1; srun -n2 python3 $WORK/hog.py 100 8")"
    cancel="$(sub -J hb-usage-cancel -c2 --mem=400M --time=5 -o "$WORK/cancel.out" --wrap "python3 $WORK/hog.py 200 120")"
    short="$(sub -J hb-usage-short -o /dev/null --wrap true)"
    MINE+=("$spin" "$steps" "$cancel" "$short")
    wait_until "spin job has 250 MB" 40 rss_at_least "$spin" '[.]batch$' 256000
    build usage.sstat_argv "$spin"; q usage_sstat_running.txt "${BUILT[@]}"
    qerr usage_sstat_plain_jobid sstat -n -P -j "$spin" -o JobID,MaxRSS,TRESUsageInTot
    qerr usage_sstat_batch sstat -n -P -j "$spin.batch" -o JobID,MaxRSS,TRESUsageInTot
    qerr usage_sstat_allsteps_batch sstat -n -P -a -j "$spin.batch" -o JobID,MaxRSS,TRESUsageInTot
    wait_until "srun step of $steps has 80 MB" 40 rss_at_least "$steps" '[.]0$' 80000
    build usage.sstat_argv "$steps" "$spin"; q usage_sstat_steps.txt "${BUILT[@]}"
    wait_until "cancel job has 150 MB" 40 rss_at_least "$cancel" '[.]batch$' 150000
    wait_until "cancel job used 2 s of CPU" 40 cpu_at_least "$cancel" 2
    U scancel "$cancel"
    local j; for j in "$spin" "$steps" "$cancel" "$short"; do
        wait_until "$j ended" 60 ended "$j"; wait_until "sacct of $j final" 20 settled "$j"
    done
    qerr usage_sstat_finished sstat -n -P -a -j "$spin" -o JobID,MaxRSS
    build usage.sacct_usage_argv "$spin" "$steps" "$cancel" "$short"; q usage_sacct.txt "${BUILT[@]}"
    # seff's view of the same jobs, where the site installs it (Debian's slurm-client does not)
    if command -v seff >/dev/null; then q usage_seff_spin.txt seff "$spin"; fi
    q usage_sacct_human.txt sacct -j "$spin,$steps" -o JobID,State,Elapsed,TotalCPU,AllocCPUS,ReqMem,AllocTRES%40,MaxRSS,NTasks
}

s_fail() {
    local ids=() names=(exit2 missing_input not_found not_found_bash not_executable traceback
                        py_missing_file py_missing_module segv segv_exec exit_137 stdout_only oom) i
    printf '#!/bin/sh\necho hi\n' > "$WORK/noexec.sh"; chmod 644 "$WORK/noexec.sh"
    local cmds=(
        'echo "reading deck.in"; echo "error: deck.in has no SOLVER section" >&2; exit 2'
        "cat $WORK/no-such-dir/input.dat"
        'nosuch-solver --input deck.in'
        'env PATH=/usr/bin:/bin bash -c "nosuch-solver --input deck.in"'
        "$WORK/noexec.sh"
        'python3 -c "import json; json.loads(open(\"/etc/hostname\").read() + \"{\")"'
        'python3 -c "open(\"deck.in\")"'
        'python3 -c "import nosuch_solver_module"'
        'python3 -c "import ctypes; ctypes.string_at(0)"'
        'exec python3 -c "import ctypes; ctypes.string_at(0)"'
        'exit 137'
        'echo "FATAL: mesh file mesh.msh not found"; exit 3'
        "python3 $WORK/hog.py 300 10"
    )
    for i in "${!names[@]}"; do
        local extra=(--mem=200M)
        [ "${names[$i]}" = oom ] && extra=(--mem=50M)
        ids+=("$(sub -J "hb-fail-${names[$i]}" "${extra[@]}" -o "$WORK/fail_${names[$i]}.out" -e "$WORK/fail_${names[$i]}.err" --wrap "${cmds[$i]}")")
    done
    MINE+=("${ids[@]}")
    for i in "${!ids[@]}"; do
        wait_until "${ids[$i]} ended" 60 ended "${ids[$i]}"; wait_until "sacct of ${ids[$i]} final" 20 settled "${ids[$i]}"
        printf '%s\t%s\n' "usage_fail_${names[$i]}.stdout/.stderr" "sbatch --wrap '${cmds[$i]}' (job ${ids[$i]}: its -o / -e files)" >> "$CMDLOG"
        cp "$WORK/fail_${names[$i]}.out" "$OUT/usage_fail_${names[$i]}.stdout"
        cp "$WORK/fail_${names[$i]}.err" "$OUT/usage_fail_${names[$i]}.stderr"
    done
    build usage.sacct_usage_argv "${ids[@]}"; q usage_fail_sacct.txt "${BUILT[@]}"
    printf '%s\n' "${names[@]}" > "$OUT/usage_fail_names.txt"
}

s_queue() {
    local blocker a b c nice held dep arr hi pinned
    # Wait (bounded) until nothing else runs: the blocker must get every node.
    wait_until "lab idle" 120 eval '[ -z "$(squeue -h -t R,CG -o %A)" ]'
    blocker="$(sub -J hb-q-blocker --exclusive -N3 --time=3 -o /dev/null --wrap 'sleep 300')"
    MINE+=("$blocker")
    wait_until "blocker running" 30 is_state "$blocker" RUNNING
    a="$(sub -J hb-q-a -n1 --time=2 -o /dev/null --wrap 'sleep 30')"
    b="$(sub -J hb-q-b -n4 --time=4 -o /dev/null --wrap 'sleep 30')"
    nice="$(sub -J hb-q-nice --nice=1000 -n1 --time=2 -o /dev/null --wrap 'sleep 30')"
    held="$(sub -J hb-q-held --hold -n1 --time=2 -o /dev/null --wrap 'sleep 30')"
    dep="$(sub -J hb-q-dep --dependency="afterok:$blocker" -n1 --time=2 -o /dev/null --wrap 'sleep 30')"
    arr="$(sub -J hb-q-array --array=0-2 -n1 --time=2 -o /dev/null --wrap 'sleep 30')"
    hi="$(sub -J hb-q-high -p high -n1 --time=2 -o /dev/null --wrap 'sleep 30')"
    c="$(sub -J hb-q-c -n1 --time=2 -o /dev/null --wrap 'sleep 30')"
    MINE+=("$a" "$b" "$nice" "$held" "$dep" "$arr" "$hi" "$c")
    # a job pinned to a drained node: ReqNodeNotAvail, UnavailableNodes:...
    scontrol update nodename=node3 state=drain reason=hpcbridge-capture
    trap 'scontrol update nodename=node3 state=resume 2>/dev/null || true; cleanup' EXIT
    pinned="$(sub -J hb-q-pinned -w node3 -n1 --time=2 -o /dev/null --wrap 'sleep 30')"
    MINE+=("$pinned")
    # backfill (bf_interval=2) computes the estimates: wait until job a has one
    wait_until "estimated start of $a" 40 eval "[ \"\$(squeue -h -j $a -o %S)\" != N/A ]"
    wait_until "reason of $pinned" 20 eval "squeue -h -j $pinned -o %r | grep -q ReqNodeNotAvail"
    local ours=("$a" "$b" "$nice" "$held" "$dep" "${arr}_0" "${arr}_1" "${arr}_2" "$hi" "$c" "$pinned")
    build queue.squeue_start_argv "${ours[@]}"; q queue_start.txt "${BUILT[@]}"
    build queue.pending_queue_argv; q queue_pending.txt "${BUILT[@]}"
    q queue_start_default.txt squeue --start
    q queue_reasons.txt squeue --noheader -t PD -O 'JobArrayID:|,State:|,Reason:|,Name:'
    printf '%s\n' "blocker=$blocker a=$a b=$b nice=$nice held=$held dep=$dep array=$arr high=$hi c=$c pinned=$pinned" > "$OUT/queue_jobs.txt"
    scontrol update nodename=node3 state=resume
    cleanup; MINE=()
}

s_timeout() {
    local t
    t="$(sub -J hb-usage-timeout --time=1 --mem=500M -o "$WORK/timeout.out" -e "$WORK/timeout.err" --wrap "python3 $WORK/hog.py 300 600")"
    MINE+=("$t")
    wait_until "$t timed out" 150 ended "$t"; wait_until "sacct of $t final" 20 settled "$t"
    build usage.sacct_usage_argv "$t"; q usage_sacct_timeout.txt "${BUILT[@]}"
    printf '%s\t%s\n' "usage_fail_timeout.stdout/.stderr" "the -o / -e files of job $t" >> "$CMDLOG"
    cp "$WORK/timeout.out" "$OUT/usage_fail_timeout.stdout"
    cp "$WORK/timeout.err" "$OUT/usage_fail_timeout.stderr"
}

s_config() {
    # JobAcctGatherType tells for certain whether sstat/sacct can have numbers at all
    q usage_scontrol_config.txt scontrol show config
}

for s in "${SCENARIOS[@]}"; do
    say "scenario $s"
    "s_$s"
done
