#!/bin/bash
#SBATCH --job-name="hpcb-01hq3v7k2m9xyz-2"
#SBATCH --comment="hpcb:0123456789abcdef"
#SBATCH --chdir="/tmp/it's a \"dir\" $(x) 100%"
#SBATCH --output="/tmp/it's a \"dir\" $(x) 100%%/.hpcbridge/attempt-2.out"
#SBATCH --error="/tmp/it's a \"dir\" $(x) 100%%/.hpcbridge/attempt-2.err"
#SBATCH --open-mode="append"
#SBATCH --partition="a'; echo foo"
#SBATCH --account="$(rm -rf ~)"
#SBATCH --qos="q\" --wrap=\"x"
#SBATCH --gres="gpu:1 #SBATCH --uid=0"
#SBATCH "--no-requeue"
#SBATCH --mail-user="a\"b c#d"
# hpcbridge task hpcb-01hq3v7k2m9xyz-2: no #SBATCH lines below this point
set -u
# This shell only keeps the markers and passes signals on. The task's environment and
# the site setup are applied in the task's own process below, so nothing they set
# (PATH, a variable named like these) can move or break the markers.
readonly __hpcb_dir='/tmp/it'"'"'s a "dir" $(x) 100%/.hpcbridge/2'
mkdir -p "$__hpcb_dir"
# Markers are written to a temp file and renamed: a reader never sees half a value.
__hpcb_mark() {
    printf '%s\n' "$2" > "$__hpcb_dir/.$1.$$" && mv -f "$__hpcb_dir/.$1.$$" "$__hpcb_dir/$1"
}
# A Slurm requeue re-runs this script in the same attempt: forget the previous end.
rm -f "$__hpcb_dir/exit_code"
__hpcb_mark started "$(date +%s)"
__hpcb_mark node "${SLURMD_NODENAME:-$(hostname)}"
# An array element is named <array job id>_<index> (what squeue -r, sacct and scancel
# take); its SLURM_JOB_ID is an internal id of its own.
if [ -n "${SLURM_ARRAY_JOB_ID:-}" ] && [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then
    __hpcb_mark job_id "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"
else
    __hpcb_mark job_id "${SLURM_JOB_ID:-}"
fi
__hpcb_mark restarts "${SLURM_RESTART_COUNT:-0}"
# Run the task in the background so this shell can take signals (--signal=B:...,
# scancel --batch) and pass them on. Job control (set -m) keeps SIGINT deliverable:
# without it a background child starts with SIGINT ignored.
__hpcb_child=
__hpcb_sig=
# A signal that arrives before the child exists is kept and delivered once it does.
__hpcb_pending=
__hpcb_fwd() { __hpcb_sig=1; if [ -n "$__hpcb_child" ]; then kill -s "$1" "$__hpcb_child" 2>/dev/null; else __hpcb_pending=$1; fi; return 0; }
# TERM is never passed on: on scancel, the time limit and preemption Slurm sends it to
# every process of the job, the task included (a second one would interrupt its
# checkpoint). This shell only keeps waiting for the task, then records its end.
__hpcb_term=
trap '__hpcb_sig=1; __hpcb_term=1' TERM
trap '__hpcb_fwd USR1' USR1
trap '__hpcb_fwd USR2' USR2
trap '__hpcb_fwd INT' INT
# Terminated before the task started: it never got Slurm's TERM, so do not start it.
if [ -n "$__hpcb_term" ]; then __hpcb_mark exit_code 143; exit 143; fi
set -m
(
    # Until the task replaces this subshell, a passed-on signal must not end it.
    trap : USR1 USR2 INT
    export EVIL='$(touch pwned4); `x` '"'"'"'
    trap - USR1 USR2 INT
    exec printf '%s\n' 'a'"'"'; touch pwned; echo '"'"'' '$(touch pwned2)' '`touch pwned3`' 'ünï cødé' 'dq" x \" y' '#not-a-comment' '%j %x'
) &
__hpcb_child=$!
set +m
if [ -n "$__hpcb_pending" ]; then kill -s "$__hpcb_pending" "$__hpcb_child" 2>/dev/null; fi
__hpcb_rc=
# wait returns early (128+n) when a trapped signal arrives: wait again until the
# child itself has ended; 127 means it was already collected.
while :; do
    __hpcb_sig=
    wait "$__hpcb_child"; __hpcb_st=$?
    if [ "$__hpcb_st" -eq 127 ] && [ -n "$__hpcb_rc" ]; then break; fi
    __hpcb_rc=$__hpcb_st
    [ -n "$__hpcb_sig" ] || break
done
# An exit status is 0..255; seen once in the lab under scancel: -1. Never pass that on.
case "$__hpcb_rc" in
    ''|*[!0-9]*) __hpcb_rc=255 ;;
esac
[ "$__hpcb_rc" -le 255 ] || __hpcb_rc=255
__hpcb_mark exit_code "$__hpcb_rc"
exit "$__hpcb_rc"
