"""Parameter sweeps, pure: parameter sets from a grid, paired lists or a JSON-lines file, and
command templates with ``{name}`` placeholders filled in per set. Nothing runs here.

* ``expand(grid=, zip=, params=)``: the parameter sets, ``str -> str`` each. ``grid`` is the
  Cartesian product of its axes (the last axis varies fastest), ``zip`` pairs equal-length
  lists item by item, ``params`` is a list of sets given whole; when several are given
  their sets are combined as a product too (``grid`` x ``zip`` x ``params``). A parameter
  named twice is an error.
* ``render(template, values)``: the command (an argv list) with every ``{name}`` replaced by
  the value, inside each argument only. The result is again an argv list, run without a
  shell, so a value such as ``a'; rm -rf ~`` or ``$(id)`` arrives as one argument, as is.
  ``{{`` and ``}}`` are a literal ``{`` and ``}`` (as in Python's ``str.format``); any other
  brace that does not open or close a ``{name}`` is an error, and so is a name that is not
  a parameter of the sweep. Every problem of a template is reported in one error.
* ``parse_axis("alpha=0.05,0.1")`` and ``parse_params_lines(text)``: the CLI's spellings.

Placeholders are substituted in the command's arguments only (not in names, inputs,
outputs or metadata).
"""

from __future__ import annotations

import builtins
import itertools
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .errors import UsageError

# A parameter name: what may stand between braces.
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# More parameter sets than this in one sweep is almost surely a typo (an axis too many).
MAX_SETS = 100_000

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


def check_name(name: str, what: str = "parameter") -> str:
    """``name`` if it is a valid parameter name, else UsageError."""
    if not isinstance(name, str) or not NAME.match(name):
        raise UsageError(f"{what} name {name!r} is not valid",
                         hint="use letters, digits and '_', not starting with a digit")  # fmt: skip
    return name


def _value(name: str, value: Any, where: str) -> str:
    """One parameter value as text: strings as given; numbers and booleans as JSON spells them."""
    if isinstance(value, str):
        if "\x00" in value:
            raise UsageError(f"parameter {name!r}{where}: values may not contain NUL bytes")
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return json.dumps(value)
    raise UsageError(f"parameter {name!r}{where}: value {value!r} must be a string or a number")


def _values(name: str, values: Any, what: str) -> list[str]:
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise UsageError(f"{what} {name!r}: give a list of values, got {values!r}")
    out = [_value(name, v, f" ({what})") for v in values]
    if not out:
        raise UsageError(f"{what} {name!r} has no values")
    return out


def expand(grid: Mapping[str, Iterable[Any]] | None = None,
           zip: Mapping[str, Iterable[Any]] | None = None,
           params: Iterable[Mapping[str, Any]] | None = None) -> list[dict[str, str]]:  # fmt: skip
    """The parameter sets of a sweep, in order (see the module docstring)."""
    factors: list[list[dict[str, str]]] = []
    seen: dict[str, str] = {}

    def claim(name: str, what: str) -> None:
        check_name(name)
        if name in seen:
            raise UsageError(f"parameter {name!r} is given twice ({seen[name]} and {what})")
        seen[name] = what

    if grid:
        axes = []
        for name, values in grid.items():
            claim(name, "grid")
            axes.append((name, _values(name, values, "grid axis")))
        size = math.prod(len(v) for _, v in axes)
        _check_size(size)
        names = [n for n, _ in axes]
        factors.append([dict(builtins.zip(names, combo, strict=True))
                        for combo in itertools.product(*(v for _, v in axes))])  # fmt: skip
    if zip:
        cols = []
        for name, values in zip.items():
            claim(name, "zip")
            cols.append((name, _values(name, values, "zip list")))
        lengths = {n: len(v) for n, v in cols}
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{n} has {k}" for n, k in lengths.items())
            raise UsageError(f"zipped lists must have the same length: {shown}")
        factors.append([{n: v[i] for n, v in cols} for i in range(len(cols[0][1]))])
    if params is not None:
        sets = _param_sets(params)
        if sets:
            keys = set().union(*sets)
            for name in sorted(keys):
                claim(name, "params")
            factors.append(sets)
    if not factors:
        raise UsageError("a sweep needs parameters: a grid, zipped lists or parameter sets")
    _check_size(math.prod(len(f) for f in factors))
    return [{k: v for part in combo for k, v in part.items()} for combo in itertools.product(*factors)]


def _param_sets(params: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    if isinstance(params, str | bytes | Mapping):
        raise UsageError("params must be a list of parameter sets (mappings), "
                         f"got {type(params).__name__}")  # fmt: skip
    sets = []
    for i, item in enumerate(params, 1):
        if not isinstance(item, Mapping):
            raise UsageError(f"parameter set {i} must be a mapping of name to value, got {item!r}")
        if not item:
            raise UsageError(f"parameter set {i} is empty")
        sets.append({check_name(k): _value(k, v, f" (set {i})") for k, v in item.items()})
        _check_size(len(sets))
    if sets:
        first = set(sets[0])
        for i, s in enumerate(sets[1:], 2):
            if set(s) != first:
                raise UsageError(f"parameter set {i} has keys {sorted(s)}, set 1 has {sorted(first)}",
                                 hint="every parameter set of a sweep names the same parameters")  # fmt: skip
    return sets


def _check_size(n: int) -> None:
    if n > MAX_SETS:
        raise UsageError(f"the sweep would make {n} tasks, more than the limit of {MAX_SETS}",
                         hint="check the axes (one too many?), or split the study into several sweeps")  # fmt: skip


def placeholders(arg: str) -> list[str]:
    """The placeholder names in one template argument, in order (raises on bad braces)."""
    names, problems = _scan(arg)
    if problems:
        raise UsageError(f"command template argument {arg!r}: {'; '.join(problems)}", hint=BRACE_HINT)
    return names


BRACE_HINT = "placeholders look like {alpha}; write {{ and }} for a literal brace"


def _scan(arg: str) -> tuple[list[str], list[str]]:
    names: list[str] = []
    problems: list[str] = []
    for m in _TOKEN.finditer(arg):
        tok = m.group(0)
        if tok in ("{{", "}}"):
            continue
        if m.group(1) is not None:
            if NAME.match(m.group(1)):
                names.append(m.group(1))
            else:
                problems.append(f"{tok!r} at {m.start()} is not a placeholder")
        else:
            problems.append(f"unbalanced {tok!r} at {m.start()}")
    return names, problems


def check_template(template: Sequence[str], names: Iterable[str]) -> None:
    """Raise one UsageError listing every problem of ``template`` (an argv list) for a sweep
    over the parameters ``names``: bad braces, and placeholders no parameter fills."""
    if isinstance(template, str) or not template:
        raise UsageError("a sweep's command must be a non-empty list of arguments")
    known = set(names)
    problems: list[str] = []
    unknown: list[str] = []
    for i, arg in enumerate(template):
        if not isinstance(arg, str):
            raise UsageError(f"command arguments must be strings, got {arg!r}")
        found, bad = _scan(arg)
        problems += [f"argument {i} {arg!r}: {p}" for p in bad]
        unknown += [n for n in found if n not in known and n not in unknown]
    if unknown:
        problems.append(f"unknown placeholder(s) {', '.join('{' + n + '}' for n in unknown)}"
                        f" (parameters: {', '.join(sorted(known)) or 'none'})")  # fmt: skip
    if problems:
        raise UsageError("bad command template: " + "; ".join(problems), hint=BRACE_HINT)


def render(template: Sequence[str], values: Mapping[str, str]) -> tuple[str, ...]:
    """The argv of one task: each argument with its placeholders filled (see module doc)."""
    check_template(template, values)

    def fill(m: re.Match[str]) -> str:
        tok = m.group(0)
        if tok == "{{":
            return "{"
        if tok == "}}":
            return "}"
        return values[m.group(1)]

    return tuple(_TOKEN.sub(fill, arg) for arg in template)


def parse_axis(text: str, what: str = "--grid") -> tuple[str, list[str]]:
    """``"alpha=0.05,0.1,0.2"`` -> ``("alpha", ["0.05", "0.1", "0.2"])``. Values are split at
    every comma (a value with a comma in it goes in a ``--params`` file)."""
    name, sep, rest = text.partition("=")
    if not sep:
        raise UsageError(f"{what} must look like name=v1,v2,..., got {text!r}")
    check_name(name.strip(), f"{what} parameter")
    if rest == "":
        raise UsageError(f"{what} {name.strip()!r} has no values", hint=f"{what} {name.strip()}=v1,v2")
    return name.strip(), rest.split(",")


def parse_axes(items: Iterable[str], what: str = "--grid") -> dict[str, list[str]]:
    """Several ``name=v1,v2`` items, in order; a name given twice is an error."""
    out: dict[str, list[str]] = {}
    for item in items:
        name, values = parse_axis(item, what)
        if name in out:
            raise UsageError(f"{what} {name!r} is given twice")
        out[name] = values
    return out


def parse_params_lines(text: str, where: str = "params") -> list[dict[str, Any]]:
    """A JSON-lines text of parameter sets (one object per line; blank lines skipped)."""
    sets = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{where}:{lineno}: not JSON: {exc.msg}") from None
        if not isinstance(item, dict):
            raise UsageError(f"{where}:{lineno}: a parameter set must be a JSON object, got {line.strip()[:60]}")
        sets.append(item)
    if not sets:
        raise UsageError(f"{where}: no parameter sets in the file",
                         hint='one JSON object per line, e.g. {"alpha": 0.1, "nx": 32}')  # fmt: skip
    return sets


__all__ = ["BRACE_HINT", "MAX_SETS", "NAME", "check_name", "check_template", "expand",
           "parse_axes", "parse_axis", "parse_params_lines", "placeholders", "render"]  # fmt: skip
