"""The import graph of hpcbridge/ points only down, and no module reaches into another's
private names. Every import counts: module level, inside functions, under TYPE_CHECKING.

The layers, bottom to top (README, "Architecture"). A module may import modules of lower
layers, and modules of its own layer only inside its own package (``slurm.parse`` may use
``slurm.states``; ``cycle`` may not use ``service``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "hpcbridge"

LAYERS: list[tuple[str, ...]] = [
    ("registry_file",),
    ("lazylog",),
    ("errors",),
    ("states",),
    ("task_rows",),
    ("lifecycle",),
    ("event_names", "records"),
    ("models", "paths", "leases", "sweep", "deps", "events", "transfers"),
    ("config", "schema", "slurm"),
    ("diagnostics",),
    ("report",),
    ("report_data",),
    ("report_html",),
    ("topview", "progress"),
    ("transport",),
    ("backends",),
    ("doctor",),
    ("registry_queries",),
    ("registry_read",),
    ("registry_batch",),
    ("registry",),
    ("listing",),
    ("outbox",),
    ("options",),
    ("runtime",),
    ("notify",),
    ("submission",),
    ("reconcile",),
    ("watch",),
    ("cycle",),
    ("service",),
    ("projects",),
    ("reporting",),
    ("api", "daemon", "testing"),
    ("tui",),
    ("cli_common",),
    ("cli_complete",),
    ("cli_tasks", "cli_projects", "cli_submit", "cli_report", "cli_events", "cli_top", "cli_task_actions"),
    ("cli_clusters",),
    ("cli", "__init__"),
    ("__main__",),
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def _modules(pkg: Path) -> dict[str, Path]:
    out = {}
    for path in pkg.rglob("*.py"):
        rel = path.relative_to(pkg).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules(PKG)


def _top(module: str) -> str:
    return module.split(".")[0]


def _imports(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, list[str], int]]:
    """(imported module, names, line) for every import, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parts = [p for p in module.split(".") if p]
    pkg_parts = parts if path.name == "__init__.py" else parts[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg_parts[: len(pkg_parts) - (node.level - 1)]
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and node.module.startswith("hpcbridge"):
                target = node.module.removeprefix("hpcbridge").lstrip(".")
            else:
                continue
            names = [a.name for a in node.names]
            # `from . import x` / `from .pkg import mod`: the names may be modules.
            submods = [f"{target}.{n}".lstrip(".") for n in names if f"{target}.{n}".lstrip(".") in modules]
            if submods:
                out.extend((m, [], node.lineno) for m in submods)
            else:
                out.append((target, names, node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("hpcbridge."):
                    out.append((alias.name.removeprefix("hpcbridge."), [], node.lineno))
    return out


def _violations(pkg: Path = PKG) -> list[str]:
    modules = _modules(pkg)
    bad = []
    for module, path in sorted(modules.items()):
        if module == "":
            module = "__init__"
        top = _top(module)
        if top not in RANK:
            bad.append(f"{module}: not in any layer of test_layers.LAYERS")
            continue
        for target, names, line in _imports(module if module != "__init__" else "", path, modules):
            target = target or "__init__"
            ttop = _top(target)
            if ttop not in RANK:
                bad.append(f"{module}:{line} imports {target}, which is in no layer")
                continue
            same_package = ttop == top
            if RANK[ttop] > RANK[top] or (RANK[ttop] == RANK[top] and not same_package):
                bad.append(f"{module}:{line} imports {target} (layer {RANK[ttop]}) from layer {RANK[top]}")
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private and not same_package:
                bad.append(f"{module}:{line} imports private name(s) {private} of {target}")
    return bad


def test_every_import_points_down_and_no_private_names_cross_modules() -> None:
    assert _violations() == []


def test_every_module_is_in_a_layer() -> None:
    assert {_top(m or "__init__") for m in MODULES} <= set(RANK)


@pytest.mark.parametrize("snippet, expected", [
    ("from .service import Service", "imports service"),
    ("from .cycle import _cycle", "private name"),
])  # fmt: skip
def test_the_check_catches_an_upward_import(tmp_path: Path, snippet: str, expected: str) -> None:
    # The check itself must be able to fail: plant an upward import in a copy of a leaf.
    fake = tmp_path / "hpcbridge"
    fake.mkdir()
    for name in ("errors.py", "cycle.py", "service.py", "__init__.py"):
        (fake / name).write_text("", encoding="utf-8")
    (fake / "lifecycle.py").write_text(snippet + "\n", encoding="utf-8")
    found = _violations(fake)
    assert any(expected in v for v in found), found
