"""Slurm's language, without running anything: every module here is pure.

* ``states``: every job state code Slurm prints, mapped to one lifecycle state.
* ``commands``: argv builders for sbatch, squeue, sacct, scancel, scontrol, and their
  validators (job ids, user names, the ``hpcb:<token>`` comment, job names).
* ``parse``: squeue / sacct / scontrol / sbatch output -> ``JobInfo``; time and exit-code
  parsing; ``merge_views`` (squeue's live state + sacct's history).
* ``script``: the batch script of one attempt (``#SBATCH`` header and the job wrapper).
* ``bulk``: the bash scripts that submit many jobs / read many attempts' markers in one exec,
  and the parsers of their reports.

What runs these commands, over which transport, is ``hpcbridge.backends.slurm``.
"""

from __future__ import annotations

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
)
from .commands import (
    COMMENT_PREFIX,
    SACCT_FIELDS,
    SQUEUE_FIELDS,
    check_text,
    comment_for_token,
    job_name,
    sacct_argv,
    sbatch_argv,
    scancel_argv,
    scontrol_show_job_argv,
    squeue_argv,
    squeue_missing_job_error,
    token_from_comment,
)
from .parse import (
    accounting_disabled,
    merge_views,
    parse_exit_code,
    parse_sacct,
    parse_sbatch,
    parse_scontrol_show_job,
    parse_slurm_time,
    parse_squeue,
    scheduler_unreachable,
)
from .script import (
    heredoc_delimiter,
    merge_resources,
    percent_escape,
    render_batch_script,
    sbatch_quote,
)
from .states import (
    COMPACT_CODES,
    FLAG_PRECEDENCE,
    STATE_TABLE,
    map_state,
    normalize_state,
    requeue_state,
)

__all__ = [
    "COMMENT_PREFIX",
    "COMPACT_CODES",
    "FLAG_PRECEDENCE",
    "MARKER_FILES",
    "SACCT_FIELDS",
    "SQUEUE_FIELDS",
    "STATE_TABLE",
    "BulkJob",
    "SubmitReport",
    "accounting_disabled",
    "check_text",
    "comment_for_token",
    "heredoc_delimiter",
    "job_from_markers",
    "job_name",
    "map_state",
    "marker_dir",
    "merge_resources",
    "merge_views",
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
    "squeue_argv",
    "squeue_missing_job_error",
    "token_from_comment",
]
