"""Column helpers: re-order ``sep``-separated scheduler captures.

Captures made with another field order (``scripts/lab/capture.sh``) become the exact line
shape of hpcbridge's own queries (``hpcbridge.slurm.SQUEUE_FIELDS`` / ``SACCT_FIELDS``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence


def split_columns(text: str, fields: Sequence[str], *, sep: str = "|",
                  trailing_separator: bool = False) -> list[dict[str, str]]:  # fmt: skip
    """Rows of ``sep``-separated text as dicts keyed by ``fields``. ``trailing_separator``:
    each line ends with ``sep`` (squeue ``-O 'Field:|'`` output). A line with the wrong
    number of fields raises ValueError naming it."""
    rows: list[dict[str, str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        body = line[: -len(sep)] if trailing_separator and line.endswith(sep) else line
        values = body.split(sep)
        if len(values) != len(fields):
            raise ValueError(f"expected {len(fields)} fields {list(fields)}, got "
                             f"{len(values)} in {line!r}")  # fmt: skip
        rows.append(dict(zip(fields, values, strict=True)))
    return rows


def join_columns(rows: Sequence[Mapping[str, str]], fields: Sequence[str], *, sep: str = "|",
                 trailing_separator: bool = False) -> str:  # fmt: skip
    """The inverse of :func:`split_columns`: one line per row, ``fields`` in order. A field
    a row lacks raises KeyError naming it (captures must not silently lose columns)."""
    lines = []
    for row in rows:
        missing = [f for f in fields if f not in row]
        if missing:
            raise KeyError(f"row has no field(s) {missing}; it has {sorted(row)}")
        line = sep.join(row[f] for f in fields)
        lines.append(line + sep if trailing_separator else line)
    return "".join(line + "\n" for line in lines)


def reorder_columns(
    text: str,
    have: Sequence[str],
    want: Sequence[str],
    *,
    sep: str = "|",
    trailing_separator: bool = False,
    edit: Callable[[dict[str, str]], object] | None = None,
) -> str:
    """Captured rows in field order ``have`` as lines in order ``want`` (no trailing
    separator: the shape of hpcbridge's own squeue/sacct queries). ``edit`` may change each
    row (a dict) first, e.g. give a lab job the ``hpcb:<token>`` comment of an hpcbridge job.
    Extra captured fields are dropped; a wanted field the capture lacks raises KeyError."""
    rows = split_columns(text, have, sep=sep, trailing_separator=trailing_separator)
    if edit is not None:
        for row in rows:
            edit(row)
    return join_columns(rows, want, sep=sep)
