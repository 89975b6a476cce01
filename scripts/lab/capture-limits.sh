#!/usr/bin/env bash
# Capture what hpcbridge.slurm.limits parses (scontrol show config, sacctmgr assoc/qos,
# sinfo partitions, sbatch --version), as the lab user, with the argv of the Python builders.
# Writes tests/data/slurm/<version>/limits_*.txt (+ .stderr/.rc), see COMMANDS.md "Limits".
#
#   flock /tmp/hpcbridge-lab.lock scripts/lab/capture-limits.sh [OUTDIR]
#
# The "limited" scenario adds, for a few seconds, QOS hpcbcap (MaxSubmitJobsPerUser=25),
# accounts hpcbcap (MaxSubmitJobs=40, inherited by the user's association) and hpcbcap2
# with user associations of the lab user in both (hpcbcap2's own MaxSubmitJobs=7), and
# removes them again (also on error). The user's default account (lab) is untouched.
# With the lab enforcing limits (AccountingStorageEnforce=limits,qos), it then fills those
# limits with held jobs and captures sbatch's refusals (limits_refused_*), a single job
# and an array each, and cancels the held jobs.
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PY="$REPO/.venv/bin/python"
VER="$(slurmd -V | awk '{print $2}')"
OUT="$(realpath -m "${1:-$REPO/tests/data/slurm/$(echo "$VER" | cut -d. -f1,2)}")"
LAB_USER=hpcblab
mkdir -p "$OUT"
"$REPO/scripts/slurm-lab" up >/dev/null
CMDLOG="$OUT/limits_commands.log"
: > "$CMDLOG"

argv() {  # argv of a limits builder: argv NAME [ARG] -> array BUILT
    mapfile -d '' -t BUILT < <("$PY" - "$@" <<'PYEOF'
import sys
from hpcbridge.slurm import limits
fn = getattr(limits, sys.argv[1])
print("\0".join(fn(*sys.argv[2:])), end="\0")
PYEOF
)
}
cap() {  # cap NAME CMD...: run as the lab user, keep stdout, stderr, exit status
    local name="$1"; shift
    runuser -u "$LAB_USER" -- "$@" >"$OUT/$name.txt" 2>"$OUT/$name.stderr"
    echo $? >"$OUT/$name.rc"
    printf '%s: %s\n' "$name" "$*" >>"$CMDLOG"
    [ -s "$OUT/$name.stderr" ] || rm -f "$OUT/$name.stderr"
}

argv scontrol_config_argv; cap limits_scontrol_config "${BUILT[@]}"
argv assoc_argv "$LAB_USER"; cap limits_assoc "${BUILT[@]}"
argv assoc_argv nosuchuser; cap limits_assoc_nouser "${BUILT[@]}"
argv qos_argv; cap limits_qos "${BUILT[@]}"
argv sinfo_partitions_argv; cap limits_sinfo "${BUILT[@]}"
argv version_argv; cap limits_sbatch_version "${BUILT[@]}"
cap limits_sacct_probe sacct --noheader -X --starttime=now-1minutes --format=JobID

cleanup() {
    sacctmgr -i delete user "$LAB_USER" account=hpcbcap,hpcbcap2 >/dev/null 2>&1
    sacctmgr -i delete account hpcbcap,hpcbcap2 >/dev/null 2>&1
    sacctmgr -i delete user "$LAB_USER" account=hpcbcap3 >/dev/null 2>&1
    sacctmgr -i delete account hpcbcap3 >/dev/null 2>&1
    sacctmgr -i delete qos hpcbcap,hpcbcapw >/dev/null 2>&1
}
trap cleanup EXIT
cleanup
sacctmgr -i add qos hpcbcap MaxSubmitJobsPerUser=25 >/dev/null
sacctmgr -i add account hpcbcap parent=lab cluster=lab MaxSubmitJobs=40 description=cap organization=lab >/dev/null
sacctmgr -i add account hpcbcap2 parent=lab cluster=lab description=cap organization=lab >/dev/null
sacctmgr -i add user "$LAB_USER" account=hpcbcap cluster=lab qos=normal,hpcbcap defaultqos=hpcbcap >/dev/null
sacctmgr -i add user "$LAB_USER" account=hpcbcap2 cluster=lab MaxSubmitJobs=7 >/dev/null
argv assoc_argv "$LAB_USER"; cap limits_assoc_limited "${BUILT[@]}"
argv qos_argv; cap limits_qos_limited "${BUILT[@]}"

# ---- sbatch refused for a submit limit (needs AccountingStorageEnforce with limits)
held=()
assoc_known() {  # assoc_known ACCOUNT TEXT: slurmctld has it (slurmdbd pushes it a moment after sacctmgr)
    runuser -u "$LAB_USER" -- scontrol show assoc_mgr users="$LAB_USER" accounts="$1" flags=assoc 2>/dev/null \
        | grep -q "$2"
}
for _ in $(seq 100); do assoc_known hpcbcap2 "MaxSubmitJobs=7(" && assoc_known hpcbcap "MaxSubmitJobs=40(" && break; sleep 0.1; done
cleanup_jobs() { [ "${#held[@]}" -eq 0 ] || scancel "${held[@]}" 2>/dev/null; cleanup; }
trap cleanup_jobs EXIT
fill() {  # fill ACCOUNT QOS N: N held array elements of the lab user
    held+=("$(runuser -u "$LAB_USER" -- sbatch --parsable -H -A "$1" --qos="$2" -p debug -o /dev/null \
              --array="0-$(($3 - 1))" --wrap true)")
}
capsub() {  # capsub NAME ACCOUNT QOS [SBATCH OPTION...]: an sbatch that a limit refuses
    local name="$1" acct="$2" qos="$3"; shift 3
    cap "$name" sbatch --parsable -H -A "$acct" --qos="$qos" -p debug -o /dev/null "$@" --wrap true
    if [ "$(cat "$OUT/$name.rc")" = 0 ]; then held+=("$(cat "$OUT/$name.txt")"); fi
}
fill hpcbcap2 normal 7      # hpcbcap2's own MaxSubmitJobs=7, full
capsub limits_refused_assoc hpcbcap2 normal
capsub limits_refused_assoc_array hpcbcap2 normal --array=0-1
fill hpcbcap hpcbcap 25     # QOS hpcbcap's MaxSubmitJobsPerUser=25 full (its jobs only)
capsub limits_refused_qos hpcbcap hpcbcap
# Not a submit limit: a QOS MaxWall that denies (DenyOnLimit) rather than leaving the job
# pending prints the same "violates accounting/QOS policy" line; waiting never cures it.
sacctmgr -i add qos hpcbcapw MaxWall=00:01:00 Flags=DenyOnLimit >/dev/null
sacctmgr -i add account hpcbcap3 parent=lab cluster=lab description=cap organization=lab >/dev/null
sacctmgr -i add user "$LAB_USER" account=hpcbcap3 cluster=lab qos=hpcbcapw defaultqos=hpcbcapw >/dev/null
for _ in $(seq 100); do assoc_known hpcbcap3 "Account=hpcbcap3 " && break; sleep 0.1; done
capsub limits_refused_max_wall hpcbcap3 hpcbcapw --time=5
echo "limits captured in $OUT" >&2
