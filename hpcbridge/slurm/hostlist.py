"""Slurm hostlists (``c[01,05],d[2-4]``): expand to names, compress back. Pure.

Slurm prints node lists in this compressed form everywhere (squeue NodeList, sacct NodeList,
scontrol NodeList=) and accepts it everywhere (``--exclude``, ``--nodelist``). Splitting one on
commas breaks it (``c[01,05]`` -> ``c[01`` and ``05]``), so node lists go through here.

Rules, as Slurm's hostlist code applies them: a bracket holds comma-separated numbers and
``lo-hi`` ranges; zero padding is the width of the written number (``01-10`` gives ``01`` ..
``10``, ``8-10`` gives ``8``, ``9``, ``10``); several bracket groups in one name multiply
(``r[1-2]n[1-2]``); names are kept in the order given, without repeats.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# A cap on one expansion, so a typo like node[1-99999999] cannot eat the memory.
MAX_HOSTS = 100_000

_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")
_TAIL = re.compile(r"^(.*?)(\d+)$")


def _split_top(text: str) -> list[str]:
    """Split on the commas that are not inside brackets."""
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch == "[":
            if depth:
                raise ValueError(f"nested '[' in hostlist {text!r}")
            depth = 1
        elif ch == "]":
            if not depth:
                raise ValueError(f"unbalanced ']' in hostlist {text!r}")
            depth = 0
        elif ch == "," and not depth:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    if depth:
        raise ValueError(f"unbalanced '[' in hostlist {text!r}")
    parts.append("".join(cur))
    return parts


def _numbers(inner: str, text: str) -> list[str]:
    out: list[str] = []
    for item in inner.split(","):
        m = _RANGE.match(item.strip())
        if not m:
            raise ValueError(f"bad range {item!r} in hostlist {text!r}")
        lo_text, hi_text = m[1], m[2] if m[2] is not None else m[1]
        lo, hi = int(lo_text), int(hi_text)
        if hi < lo:
            raise ValueError(f"range {item!r} runs backwards in hostlist {text!r}")
        if hi - lo + 1 > MAX_HOSTS:
            raise ValueError(f"range {item!r} in hostlist {text!r} is too large")
        width = len(lo_text)
        out.extend(f"{n:0{width}d}" for n in range(lo, hi + 1))
    return out


def _expand_one(item: str, text: str) -> list[str]:
    start = item.find("[")
    if start < 0:
        if not _NAME.match(item):
            raise ValueError(f"bad host name {item!r} in hostlist {text!r}")
        return [item]
    end = item.index("]", start)
    head, inner, rest = item[:start], item[start + 1 : end], item[end + 1 :]
    if head and not _NAME.match(head):
        raise ValueError(f"bad host name prefix {head!r} in hostlist {text!r}")
    tails = _expand_one(rest, text) if rest else [""]
    names = [head + n + t for n in _numbers(inner, text) for t in tails]
    if len(names) > MAX_HOSTS:
        raise ValueError(f"hostlist {text!r} expands to more than {MAX_HOSTS} names")
    return names


def expand_hostlist(text: str) -> list[str]:
    """``"c[01,05],d[2-4]"`` -> ``["c01", "c05", "d2", "d3", "d4"]``. An empty string is no
    host. Raises ValueError for anything that is not a hostlist."""
    text = (text or "").strip()
    if not text:
        return []
    names: list[str] = []
    for item in _split_top(text):
        item = item.strip()
        if not item:
            raise ValueError(f"empty item in hostlist {text!r}")
        names.extend(_expand_one(item, text))
        if len(names) > MAX_HOSTS:
            raise ValueError(f"hostlist {text!r} expands to more than {MAX_HOSTS} names")
    return list(dict.fromkeys(names))


def _ranges(numbers: list[int], width: int) -> str:
    parts: list[str] = []
    i = 0
    while i < len(numbers):
        j = i
        while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
            j += 1
        lo, hi = f"{numbers[i]:0{width}d}", f"{numbers[j]:0{width}d}"
        parts.append(lo if i == j else f"{lo}-{hi}")
        i = j + 1
    return ",".join(parts)


def compress_hostlist(names: Iterable[str]) -> str:
    """``["c01", "c05", "d2", "d3", "d4"]`` -> ``"c[01,05],d[2-4]"``: names sharing a prefix
    and a number width become one bracket group (padding kept: ``c01`` and ``c1`` stay
    apart). Groups keep the order of their first name; numbers are sorted. Each name must
    be a plain host name (expand a hostlist first). Raises ValueError otherwise."""
    items = list(names)
    parsed: list[tuple[str, str] | None] = []
    padded: set[tuple[str, int]] = set()
    for name in items:
        if not _NAME.match(name):
            raise ValueError(f"bad host name {name!r}")
        m = _TAIL.match(name)
        parsed.append((m[1], m[2]) if m else None)
        if m and m[2].startswith("0") and len(m[2]) > 1:
            padded.add((m[1], len(m[2])))
    groups: dict[tuple[str, int], set[int]] = {}
    order: list[tuple[str, int] | str] = []
    for name, got in zip(items, parsed, strict=True):
        if got is None:
            if name not in order:
                order.append(name)
            continue
        prefix, digits = got
        # A zero-padded number keeps its width; an unpadded one joins the padded group of
        # its prefix whose width it has (c09, c10 -> c[09-10]), else the unpadded group.
        width = len(digits) if (prefix, len(digits)) in padded else 0
        key = (prefix, width)
        if key not in groups:
            groups[key] = set()
            order.append(key)
        groups[key].add(int(digits))
    out: list[str] = []
    for entry in order:
        if isinstance(entry, str):
            out.append(entry)
            continue
        prefix, width = entry
        numbers = sorted(groups[entry])
        if len(numbers) == 1:
            out.append(f"{prefix}{numbers[0]:0{width}d}")
        else:
            out.append(f"{prefix}[{_ranges(numbers, width)}]")
    return ",".join(out)
