"""Slurm's language, without running anything: every module here is pure.

* ``states``: every job state code Slurm prints, mapped to one lifecycle state.
* ``commands``: argv builders for sbatch, squeue, sacct, scancel, scontrol, and their
  validators (job ids, user names, the ``hpcb:<token>`` comment, job names).
* ``parse``: squeue / sacct / scontrol / sbatch output -> ``JobInfo``; time and exit-code
  parsing; ``merge_views`` (squeue's live state + sacct's history).
* ``script``: the batch script of one attempt (``#SBATCH`` header and the job wrapper).
* ``sbatch_options``: which extra sbatch options a task may add (``check_sbatch_options``).
* ``hostlist``: ``c[01,05],d[2-4]`` <-> node names.
* ``bulk``: the bash scripts that submit many jobs / read many attempts' markers in one exec,
  and the parsers of their reports.
* ``limits``: ``scontrol show config`` / ``sacctmgr`` associations and QOS / ``sinfo``
  partitions / ``sbatch --version`` -> ``ClusterLimits`` (MaxArraySize, MaxJobCount, the
  tightest MaxSubmitJobs), ``Partition`` (import it as ``hpcbridge.slurm.limits``).

What runs these commands, over which transport, is ``hpcbridge.backends.slurm``.
"""

from __future__ import annotations

from .array import (
    DEFAULT_MAX_ARRAY_SIZE,
    ArrayJob,
    ArrayMember,
    array_key,
    array_name,
    plan_arrays,
    render_array_script,
)
from .bulk import (
    MARKER_FILES,
    BulkJob,
    SubmitReport,
    job_from_markers,
    marker_dir,
    parse_marker_report,
    parse_submit_report,
    render_marker_probe,
    render_submit_script,
    sbatch_outcome_uncertain,
    submit_limit_reason,
)
from .commands import (
    COMMENT_PREFIX,
    SACCT_FIELDS,
    SCHEDULER_ENV,
    SCHEDULER_ENV_PREFIXES,
    SQUEUE_FIELDS,
    check_job_ids,
    check_text,
    command_path,
    comment_for_token,
    job_name,
    sacct_argv,
    sbatch_argv,
    scancel_argv,
    scontrol_show_job_argv,
    scrub_env,
    scrub_env_shell,
    squeue_argv,
    squeue_missing_job_error,
    token_from_comment,
)
from .hostlist import compress_hostlist, expand_hostlist
from .limits import ClusterLimits, parse_limits, parse_scontrol_config
from .parse import (
    BadRow,
    Unreadable,
    accounting_disabled,
    by_job_id,
    merge_views,
    parse_exit_code,
    parse_sacct,
    parse_sbatch,
    parse_scontrol_show_job,
    parse_slurm_time,
    parse_squeue,
    scheduler_unreachable,
    unknown_job,
)
from .sbatch_options import check_sbatch_options, merge_excludes
from .script import (
    check_signal,
    heredoc_delimiter,
    merge_resources,
    percent_escape,
    render_batch_script,
    sbatch_quote,
)
from .states import (
    COMPACT_CODES,
    FLAG_PRECEDENCE,
    HELD_REASONS,
    LAUNCH_FAILED_REASONS,
    STATE_TABLE,
    classify_job,
    map_state,
    normalize_reason,
    normalize_state,
    requeue_state,
)

__all__ = [
    "ClusterLimits",
    "parse_limits",
    "parse_scontrol_config",
    "COMMENT_PREFIX",
    "COMPACT_CODES",
    "FLAG_PRECEDENCE",
    "HELD_REASONS",
    "LAUNCH_FAILED_REASONS",
    "MARKER_FILES",
    "SACCT_FIELDS",
    "SCHEDULER_ENV",
    "SCHEDULER_ENV_PREFIXES",
    "SQUEUE_FIELDS",
    "STATE_TABLE",
    "DEFAULT_MAX_ARRAY_SIZE",
    "ArrayJob",
    "ArrayMember",
    "array_key",
    "array_name",
    "plan_arrays",
    "render_array_script",
    "BadRow",
    "BulkJob",
    "SubmitReport",
    "Unreadable",
    "accounting_disabled",
    "by_job_id",
    "check_sbatch_options",
    "check_job_ids",
    "check_signal",
    "check_text",
    "command_path",
    "classify_job",
    "comment_for_token",
    "compress_hostlist",
    "expand_hostlist",
    "heredoc_delimiter",
    "job_from_markers",
    "job_name",
    "map_state",
    "marker_dir",
    "merge_excludes",
    "merge_resources",
    "merge_views",
    "normalize_reason",
    "normalize_state",
    "parse_exit_code",
    "parse_marker_report",
    "parse_sacct",
    "parse_sbatch",
    "parse_scontrol_show_job",
    "parse_slurm_time",
    "parse_squeue",
    "parse_submit_report",
    "percent_escape",
    "render_batch_script",
    "render_marker_probe",
    "render_submit_script",
    "requeue_state",
    "sacct_argv",
    "sbatch_argv",
    "sbatch_outcome_uncertain",
    "sbatch_quote",
    "scancel_argv",
    "scheduler_unreachable",
    "scontrol_show_job_argv",
    "scrub_env",
    "submit_limit_reason",
    "scrub_env_shell",
    "squeue_argv",
    "squeue_missing_job_error",
    "token_from_comment",
    "unknown_job",
]
