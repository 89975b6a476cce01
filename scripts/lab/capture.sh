#!/usr/bin/env bash
# Capture real Slurm command output for the parser unit tests (tests/data/slurm/<version>/).
# Needs a running lab (scripts/slurm-lab up) and root. Jobs are submitted as the lab user;
# the query commands also run as the lab user, as hpcbridge does over SSH.
#
#   scripts/lab/capture.sh [OUTDIR] [SCENARIO...]
#
# Scenarios (default: all, in this order; the ones needing the whole cluster run first):
#   basics errors pending preempt_requeue preempt_cancel debug_not_preempted
#   node_fail running_cancel completed exit3 signal oom array requeue requeuehold
#   hold suspend comment dependency_never_satisfied timeout window
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
LAB_CMD="$REPO/scripts/slurm-lab"
VER="$(slurmd -V | awk '{print $2}')"
OUT="${1:-$REPO/tests/data/slurm/$(echo "$VER" | cut -d. -f1,2)}"
[ $# -gt 0 ] && shift
OUT="$(realpath -m "$OUT")"
LAB_USER=hpcblab
mkdir -p "$OUT"
CMDLOG="$OUT/commands.log"
WORK="/home/$LAB_USER/hpcbridge/capture"
runuser -u "$LAB_USER" -- mkdir -p "$WORK"
cd "$WORK"

# ---- the exact query forms (see tests/data/slurm/COMMANDS.md)
SQ_O='JobID:|,JobArrayID:|,ArrayJobID:|,ArrayTaskID:|,Name:|,State:|,Reason:|,NodeList:|,Partition:|,Comment:|,SubmitTime:|,StartTime:|,EndTime:|,RestartCnt:|,exit_code:|'
SQ_o='%i|%A|%F|%K|%j|%T|%r|%N|%P|%k|%V|%S|%e|%M|%l'
SA_F='JobID,JobIDRaw,JobName,State,ExitCode,DerivedExitCode,Reason,NodeList,Partition,Submit,Start,End,Elapsed,Comment'
if sacct --helpformat | tr -s ' ' '\n' | grep -qx Restarts; then SA_F="$SA_F,Restarts"; fi

say() { echo "capture: $*" >&2; }
U() { runuser -u "$LAB_USER" -- "$@"; }
sub() { U sbatch --parsable "$@"; }

# run CMD as the lab user, stdout -> FILE, log the command line
q() {
    local file="$1"; shift
    printf '%s\t%s\n' "$file" "$*" >> "$CMDLOG"
    U "$@" > "$OUT/$file"
}
# error capture: stdout, stderr and exit code of CMD
qerr() {
    local base="$1"; shift
    local rc=0
    printf '%s.{stdout,stderr,rc}\t%s\n' "$base" "$*" >> "$CMDLOG"
    U "$@" > "$OUT/$base.stdout" 2> "$OUT/$base.stderr" || rc=$?
    echo "$rc" > "$OUT/$base.rc"
}

sq()  { q "squeue_$1.txt"   squeue --noheader --states=all --jobs="$2" -O "$SQ_O"; }
sqo() { q "squeue_o_$1.txt" squeue --noheader --states=all --jobs="$2" -o "$SQ_o"; }
sa()  { q "sacct_$1.txt"       sacct --parsable2 --noheader --duplicates -X --format="$SA_F" --jobs="$2"; }
sas() { q "sacct_steps_$1.txt" sacct --parsable2 --noheader --duplicates --format="$SA_F" --jobs="$2"; }
sc()  { local f="scontrol_$1.txt" i; : > "$OUT/$f"
        for i in ${2//,/ }; do printf '%s\tscontrol -o show job %s\n' "$f" "$i" >> "$CMDLOG"
            U scontrol -o show job "$i" >> "$OUT/$f"; done; }
# 22.05: for about a second after a job starts or ends, sacct shows it named "allocation"
# with an empty partition (and a running job as PENDING). Wait until the rows are complete.
settled() { ! sacct -n -X -D -P -j "$1" -o JobName,Partition 2>/dev/null | grep -q '^allocation|$'; }
wait_settled() { wait_until "sacct rows of $1 complete" 15 settled "$1" || say "sacct rows of $1 not settled"; }
# all four list views of one scenario (sacct once its rows are complete)
cap() { sq "$1" "$2"; sqo "$1" "$2"; wait_settled "$2"; sa "$1" "$2"; sas "$1" "$2"; }
# the raw sacct view right away (shows the 22.05 transient rows)
cap_early() { q "sacct_early_$1.txt" sacct --parsable2 --noheader --duplicates -X --format="$SA_F" --jobs="$2"; }

state() { squeue -h -t all -j "$1" -o %T 2>/dev/null | head -1; }
restarts() { squeue -h -t all -j "$1" -O 'RestartCnt:|' 2>/dev/null | head -1 | cut -d'|' -f1; }
reason() { squeue -h -t all -j "$1" -o %r 2>/dev/null | head -1; }
wait_until() {
    local what="$1" secs="$2"; shift 2
    local end=$(( $(date +%s) + secs ))
    until "$@"; do
        [ "$(date +%s)" -lt "$end" ] || { say "timeout waiting for $what"; squeue -t all >&2; return 1; }
        sleep 0.5
    done
}
is_state() { local s; s="$(state "$1")"; shift; local x; for x in "$@"; do [ "$s" = "$x" ] && return 0; done; return 1; }
is_terminal() { is_state "$1" COMPLETED FAILED CANCELLED TIMEOUT OUT_OF_MEMORY PREEMPTED NODE_FAIL BOOT_FAIL DEADLINE SPECIAL_EXIT; }
sacct_state() { sacct -n -X -P -j "$1" -o State 2>/dev/null | tail -1 | cut -d' ' -f1; }
# sacct on 22.05 lags squeue by up to ~1 s for finished jobs
wait_sacct() { wait_until "sacct $1 = $2" 15 eval '[ "$(sacct_state '"$1"')" = '"$2"' ]'; }
# cancel our own leftovers (names hb-*), then wait (bounded) for other users' jobs to finish:
# the pending/preemption scenarios need the whole cluster
clear_queue() {
    local ids; ids="$(squeue -h -t PD,R,CG,S -o '%A %j' | awk '$2 ~ /^hb-/ {print $1}' | tr '\n' ' ')"
    [ -z "$ids" ] || scancel $ids
    wait_until "queue empty" 120 eval '[ -z "$(squeue -h -t R,CG,S -o %A)" ]'
}

# ------------------------------------------------------------------ scenarios
s_basics() {
    q sbatch_parsable.txt sbatch --parsable -J hb-basic --wrap true
    q sbatch_plain.txt sbatch -J hb-basic --wrap true
    q sbatch_parsable_clusters.txt sbatch --parsable --clusters=lab -J hb-basic --wrap true
    printf '#!/bin/bash\n#SBATCH --comment=hpcbridge:task=stdin1\necho from-stdin\n' > "$WORK/stdin_job.sh"; chmod 644 "$WORK/stdin_job.sh"
    printf '%s\t%s\n' sbatch_parsable_stdin.txt "sbatch --parsable -J hb-stdin < script" >> "$CMDLOG"
    U sbatch --parsable -J hb-stdin < "$WORK/stdin_job.sh" > "$OUT/sbatch_parsable_stdin.txt"
}

s_errors() {
    local id; id="$(sub --wrap true)"
    wait_until "job $id done" 20 is_terminal "$id"; wait_sacct "$id" COMPLETED
    qerr err_sbatch_invalid_partition sbatch --parsable -p nosuchpart --wrap true
    qerr err_sbatch_invalid_time sbatch --parsable --time=nonsense --wrap true
    qerr err_squeue_unknown_job squeue --noheader --states=all --jobs=999999 -O "$SQ_O"
    qerr err_squeue_known_and_unknown_job squeue --noheader --states=all --jobs="$id,999999" -O "$SQ_O"
    qerr err_sacct_unknown_job sacct --parsable2 --noheader --duplicates -X --format="$SA_F" --jobs=999999
    qerr err_sacct_restarts_field sacct --parsable2 --noheader -X --format=JobID,State,Restarts --jobs="$id"
    qerr err_scontrol_unknown_job scontrol -o show job 999999
    qerr err_scancel_unknown_job scancel 999999
    qerr err_squeue_exitcode_field squeue --noheader --states=all --jobs="$id" -O 'JobID:|,ExitCode:|'
}

s_pending() {
    clear_queue
    local blk res pri beg dep hld
    blk="$(sub -J hb-blocker -n12 --wrap 'sleep 120')"
    wait_until "blocker running" 20 is_state "$blk" RUNNING
    res="$(sub -J hb-resources -n12 --wrap 'sleep 5')"
    pri="$(sub -J hb-priority -n1 --wrap 'sleep 5')"
    beg="$(sub -J hb-begin --begin=now+3600 --wrap 'sleep 5')"
    dep="$(sub -J hb-dep --dependency=afterok:"$blk" --wrap 'sleep 5')"
    hld="$(sub -J hb-held --hold --wrap 'sleep 5')"
    # reasons are set by the next scheduling pass (sched_interval=5)
    sleep 7
    cap pending "$blk,$res,$pri,$beg,$dep,$hld"
    sc pending "$res,$pri,$beg,$dep,$hld"
    scancel "$blk" "$res" "$pri" "$beg" "$dep" "$hld"
    wait_until "cancelled" 20 is_terminal "$blk"
}

s_preempt_requeue() {
    clear_queue
    local a b c h
    a="$(sub -p low -N1 -n4 -J hb-low1 --wrap 'echo start; sleep 300')"
    b="$(sub -p low -N1 -n4 -J hb-low2 --wrap 'sleep 300')"
    c="$(sub -p low -N1 -n4 -J hb-low3 --wrap 'sleep 300')"
    wait_until "low running" 20 is_state "$c" RUNNING
    wait_until "low running" 20 is_state "$a" RUNNING
    h="$(sub -p high -n12 -J hb-high --wrap 'sleep 15')"
    wait_until "high running" 30 is_state "$h" RUNNING
    wait_until "low requeued" 30 eval '[ "$(restarts '"$a"')" = 1 ]'
    wait_until "low pending" 30 is_state "$a" PENDING
    sleep 1
    cap preempt_requeue "$a,$b,$c,$h"
    sc preempt_requeue "$a"
    # after the high job ends the requeued jobs run again under the same id
    wait_until "low running again" 60 is_state "$a" RUNNING
    sleep 1
    cap preempt_requeue_rerun "$a,$b,$c,$h"
    sc preempt_requeue_rerun "$a"
    scancel "$a" "$b" "$c"
    wait_until "low cancelled" 20 is_terminal "$a"
}

s_preempt_cancel() {
    clear_queue
    local a b c h
    a="$(sub -p lowc -N1 -n4 -J hb-lowc1 --wrap 'sleep 300')"
    b="$(sub -p lowc -N1 -n4 -J hb-lowc2 --wrap 'sleep 300')"
    c="$(sub -p lowc -N1 -n4 -J hb-lowc3 --wrap 'sleep 300')"
    wait_until "lowc running" 20 is_state "$c" RUNNING
    wait_until "lowc running" 20 is_state "$a" RUNNING
    h="$(sub -p high -n12 -J hb-high --wrap 'sleep 5')"
    wait_until "lowc preempted" 30 is_state "$a" PREEMPTED
    wait_until "high done" 40 is_terminal "$h"
    wait_sacct "$h" COMPLETED
    cap preempt_cancel "$a,$b,$c,$h"
    sc preempt_cancel "$a"
}

s_debug_not_preempted() {
    clear_queue
    local a h
    a="$(sub -p debug -n12 -J hb-debug-all --wrap 'sleep 300')"
    wait_until "debug running" 20 is_state "$a" RUNNING
    h="$(sub -p high -n12 -J hb-high --wrap 'sleep 5')"
    sleep 7
    cap debug_not_preempted "$a,$h"
    scancel "$a" "$h"
    wait_until "cancelled" 20 is_terminal "$a"
}

s_node_fail() {
    local a
    a="$(sub -w node2 -J hb-nodefail --open-mode=append --wrap 'echo start $SLURM_RESTART_COUNT; sleep 300')"
    wait_until "running" 20 is_state "$a" RUNNING
    "$LAB_CMD" node-down node2
    wait_until "requeued" 30 eval '[ "$(restarts '"$a"')" = 1 ]'
    wait_until "pending" 30 is_state "$a" PENDING
    sleep 1
    cap node_fail "$a"; sc node_fail "$a"
    "$LAB_CMD" node-resume node2
    wait_until "running again" 60 is_state "$a" RUNNING
    sleep 1
    cap node_fail_rerun "$a"; sc node_fail_rerun "$a"
    scancel "$a"; wait_until "cancelled" 20 is_terminal "$a"
}

s_running_cancel() {
    local a
    a="$(sub -J hb-running --comment 'hpcbridge:task=run1' --wrap 'sleep 300')"
    wait_until "running" 20 is_state "$a" RUNNING
    cap_early running "$a"
    sleep 1
    cap running "$a"; sc running "$a"
    U scancel "$a"
    wait_until "cancelled" 20 is_terminal "$a"; wait_sacct "$a" CANCELLED
    cap cancelled "$a"; sc cancelled "$a"
}

simple() {   # simple NAME FINAL_SACCT_STATE sbatch-args...
    local name="$1" fin="$2"; shift 2
    local a; a="$(sub "$@")"
    wait_until "$name done" 120 is_terminal "$a"; wait_sacct "$a" "$fin"
    cap_early "$name" "$a"
    cap "$name" "$a"; sc "$name" "$a"
}
s_completed() { simple completed COMPLETED -J hb-ok --wrap 'echo ok'; }
s_exit3() { simple failed_exit3 FAILED -J hb-exit3 --wrap 'exit 3'; }
s_signal() { simple failed_signal FAILED -J hb-kill9 --wrap 'kill -KILL $$'; }
s_oom() {
    local name=oom
    [ "$(scontrol show config | awk '/^ProctrackType/{print $3}')" = proctrack/cgroup ] && name=oom_cgroup
    local fin=FAILED; [ "$name" = oom_cgroup ] && fin=OUT_OF_MEMORY
    simple "$name" "$fin" -J hb-oom --mem=50M --wrap \
        'python3 -c "import time; a=bytearray(300*1024*1024); a[::4096]=b\"x\"*len(a[::4096]); time.sleep(30)"'
}

s_array() {
    local a
    a="$(sub -J hb-array --array=0-4%2 --wrap 'sleep 4; [ "$SLURM_ARRAY_TASK_ID" = 3 ] && exit 3; echo ok')"
    wait_until "array running" 20 eval 'squeue -h -j '"$a"' -o %T | grep -q RUNNING'
    sleep 1
    cap array_running "$a"
    wait_until "array done" 90 eval '[ -z "$(squeue -h -j '"$a"' -t PD,R,CG -o %i)" ]'
    wait_until "sacct array" 15 eval '[ "$(sacct -n -X -P -j '"$a"' -o State | grep -c -E "COMPLETED|FAILED")" = 5 ]'
    cap array_done "$a"
    sc array_done "$a"
}

s_requeue() {
    local a
    a="$(sub -J hb-requeue --wrap 'sleep 300')"
    wait_until "running" 20 is_state "$a" RUNNING
    scontrol requeue "$a"
    wait_until "requeued" 30 eval '[ "$(restarts '"$a"')" = 1 ]'
    wait_until "pending" 30 is_state "$a" PENDING
    sleep 1
    cap requeue "$a"; sc requeue "$a"
    scancel "$a"; wait_until "cancelled" 20 is_terminal "$a"
}

s_requeuehold() {
    local a b
    a="$(sub -J hb-requeuehold --wrap 'sleep 300')"
    b="$(sub -J hb-specialexit --wrap 'sleep 300')"
    wait_until "running" 20 is_state "$a" RUNNING
    wait_until "running" 20 is_state "$b" RUNNING
    scontrol requeuehold "$a"
    scontrol requeuehold State=SpecialExit "$b"
    wait_until "held" 30 is_state "$a" PENDING
    wait_until "special exit" 30 is_state "$b" SPECIAL_EXIT
    sleep 1
    cap requeuehold "$a,$b"; sc requeuehold "$a,$b"
    scancel "$a" "$b"
}

s_hold() {
    local a b
    a="$(sub -J hb-hold-admin --begin=now+3600 --wrap 'sleep 5')"
    b="$(sub -J hb-hold-user --begin=now+3600 --wrap 'sleep 5')"
    scontrol hold "$a"
    U scontrol hold "$b"
    sleep 1
    cap hold "$a,$b"; sc hold "$a,$b"
    scontrol release "$a"; scontrol release "$b"
    sleep 1
    cap hold_released "$a,$b"
    scancel "$a" "$b"
}

s_suspend() {
    local a
    a="$(sub -J hb-suspend --wrap 'sleep 300')"
    wait_until "running" 20 is_state "$a" RUNNING
    scontrol suspend "$a"
    wait_until "suspended" 20 is_state "$a" SUSPENDED
    sleep 1
    cap suspended "$a"; sc suspended "$a"
    scontrol resume "$a"
    scancel "$a"; wait_until "cancelled" 20 is_terminal "$a"
}

s_comment() {
    simple comment COMPLETED -J 'hb-3f2a9c' --comment 'hpcbridge:task=3f2a9c;run=7 token=abc123' --wrap 'echo ok'
}

s_dependency_never_satisfied() {
    local a b
    a="$(sub -J hb-dep-parent --wrap 'exit 1')"
    b="$(sub -J hb-dep-child --dependency=afterok:"$a" --wrap 'echo never')"
    wait_until "child gone" 30 is_terminal "$b"; wait_sacct "$b" CANCELLED
    cap dependency_never_satisfied "$a,$b"; sc dependency_never_satisfied "$b"
}

TIMEOUT_ID=""
# submitted as root: it runs ~80 s, long enough for other lab users' cleanup
# (scancel/pkill of the lab user's jobs) to hit it
s_timeout_start() { TIMEOUT_ID="$(sbatch --parsable -J hb-timeout --time=1 --wrap 'echo start; sleep 300')"; say "timeout job $TIMEOUT_ID started"; }
s_timeout_finish() {
    [ -n "$TIMEOUT_ID" ] || s_timeout_start
    wait_until "timeout" 150 is_terminal "$TIMEOUT_ID"; wait_sacct "$TIMEOUT_ID" TIMEOUT
    cap timeout "$TIMEOUT_ID"; sc timeout "$TIMEOUT_ID"
}

s_window() {
    q sacct_window_X.txt sacct --parsable2 --noheader --duplicates -X --format="$SA_F" --starttime=now-1hour
    q sacct_window_steps.txt sacct --parsable2 --noheader --duplicates --format="$SA_F" --starttime=now-1hour
    q sacct_window_nodup_X.txt sacct --parsable2 --noheader -X --format="$SA_F" --starttime=now-1hour
    q squeue_all.txt squeue --noheader --states=all -O "$SQ_O"
    q squeue_o_all.txt squeue --noheader --states=all -o "$SQ_o"
}

# ------------------------------------------------------------------ main
ALL=(basics errors pending preempt_requeue preempt_cancel debug_not_preempted node_fail
     timeout_start running_cancel completed exit3 signal oom array requeue requeuehold hold
     suspend comment dependency_never_satisfied timeout_finish window)
if [ $# -gt 0 ]; then LIST=("$@"); else LIST=("${ALL[@]}"); : > "$CMDLOG"; fi
{
    echo "slurm $VER ($(slurmd -V))"
    echo "captured $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(. /etc/os-release; echo "$PRETTY_NAME")"
    echo "ProctrackType=$(scontrol show config | awk '/^ProctrackType/{print $3}')"
} > "$OUT/versions.txt"
for s in "${LIST[@]}"; do
    say "scenario $s"
    "s_$s"
done
say "done -> $OUT"
