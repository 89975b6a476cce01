"""The public Python API is documented: every exported name and every public Task method."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import types

import pytest

import hpcbridge


def test_all_is_sorted_unique_and_importable():
    assert len(set(hpcbridge.__all__)) == len(hpcbridge.__all__)
    for name in hpcbridge.__all__:
        assert hasattr(hpcbridge, name), name


_LEAD_OWNED_DOC_BUGS: dict[str, str] = {}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.xfail(reason=_LEAD_OWNED_DOC_BUGS[n], strict=True))
        if n in _LEAD_OWNED_DOC_BUGS
        else n
        for n in hpcbridge.__all__
    ],
)
def test_every_exported_name_has_a_docstring(name):
    obj = getattr(hpcbridge, name)
    doc = inspect.getdoc(obj)
    assert doc and doc.strip(), f"hpcbridge.{name} has no docstring"
    if isinstance(obj, type) and obj.__doc__ is None:
        pytest.fail(f"hpcbridge.{name} only inherits its docstring")


def test_exported_names_survive_importing_every_submodule():
    """Importing a submodule binds it as a package attribute: ``hpcbridge.sync`` (the function)
    must not be replaced by the ``hpcbridge.sync`` module once something imported it."""
    before = {name: getattr(hpcbridge, name) for name in hpcbridge.__all__}
    for info in pkgutil.walk_packages(hpcbridge.__path__, "hpcbridge."):
        if info.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(info.name)
        except ImportError:  # optional dependency (e.g. pyslurm) missing
            continue
    for name, obj in before.items():
        now = getattr(hpcbridge, name)
        assert not isinstance(now, types.ModuleType), f"hpcbridge.{name} is now a module"
        assert now is obj, f"hpcbridge.{name} changed after importing submodules"
    assert callable(hpcbridge.sync)


def _public_members(cls: type) -> list[str]:
    return sorted(n for n in vars(cls) if not n.startswith("_"))


@pytest.mark.parametrize("name", _public_members(hpcbridge.Task))
def test_every_public_task_member_has_a_docstring(name):
    member = vars(hpcbridge.Task)[name]
    func = member.fget if isinstance(member, property) else member
    doc = inspect.getdoc(func)
    assert doc and doc.strip(), f"Task.{name} has no docstring"


def test_task_public_surface_is_what_the_docs_promise():
    assert {"wait", "kill", "logs", "download_outputs", "status", "metadata", "info",
            "events", "attempts", "record", "name"} <= set(_public_members(hpcbridge.Task))  # fmt: skip


def _readme_public_names() -> set[str]:
    """The names listed in README's "Public names (`hpcbridge.__all__`)" paragraph."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    start = text.index("Public names (`hpcbridge.__all__`)")
    para = text[start : text.index("\n\n", start)]
    # `Task` (`status`, ...) lists members in parentheses: only top-level names count.
    depth, top = 0, []
    for ch in para:
        depth += ch == "("
        depth -= ch == ")"
        top.append(ch if depth == 0 or ch == ")" else " ")
    import re

    return set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", "".join(top))) - {"hpcbridge"}


def test_all_equals_the_documented_public_names_both_ways():
    documented = _readme_public_names()
    assert sorted(set(hpcbridge.__all__) - documented) == [], "exported but not in README"
    assert sorted(documented - set(hpcbridge.__all__)) == [], "in README but not exported"


def test_every_error_a_caller_can_meet_is_exported():
    import hpcbridge.errors
    import hpcbridge.transport

    errors = {
        name
        for module in (hpcbridge.errors, hpcbridge.transport)
        for name, obj in vars(module).items()
        if isinstance(obj, type) and issubclass(obj, hpcbridge.HpcBridgeError)
    }
    assert sorted(errors - set(hpcbridge.__all__)) == []


def test_wait_timeout_is_both_an_hpcbridge_error_and_a_timeout_error():
    assert issubclass(hpcbridge.WaitTimeout, hpcbridge.HpcBridgeError)
    assert issubclass(hpcbridge.WaitTimeout, TimeoutError)
