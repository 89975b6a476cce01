"""hpcbridge.sweep: parameter sets and command templates, pure."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpcbridge.errors import UsageError
from hpcbridge.sweep import (
    MAX_SETS,
    check_template,
    expand,
    parse_axes,
    parse_axis,
    parse_params_lines,
    placeholders,
    render,
)

HOSTILE = ["a'; rm -rf ~", "$(id)", "`id`", "two words", "  ", "", "ünïcødé ☃", "a\nb", "-x", "--",
           "{alpha}", "{{", "}", "%s", "\\", "'\"", "*", "~", "$HOME"]  # fmt: skip


# ------------------------------------------------------------------ expand
def test_grid_is_the_product_last_axis_fastest() -> None:
    sets = expand(grid={"alpha": ["0.05", "0.1", "0.2"], "nx": ["32", "64"]})
    assert sets == [{"alpha": a, "nx": n} for a in ("0.05", "0.1", "0.2") for n in ("32", "64")]


def test_zip_pairs_items_and_wants_equal_lengths() -> None:
    assert expand(zip={"a": [1, 2], "b": ["x", "y"]}) == [{"a": "1", "b": "x"}, {"a": "2", "b": "y"}]
    with pytest.raises(UsageError, match="same length: a has 2, b has 3"):
        expand(zip={"a": [1, 2], "b": [1, 2, 3]})


def test_params_are_taken_whole_and_must_name_the_same_keys() -> None:
    assert expand(params=[{"a": 1, "b": "x"}, {"a": 2.5, "b": True}]) == [
        {"a": "1", "b": "x"}, {"a": "2.5", "b": "true"}]  # fmt: skip
    with pytest.raises(UsageError, match="set 2 has keys"):
        expand(params=[{"a": 1}, {"b": 2}])


def test_grid_zip_and_params_combine_as_a_product() -> None:
    sets = expand(grid={"g": ["1", "2"]}, zip={"z": ["a", "b"], "w": ["A", "B"]}, params=[{"p": "x"}])
    assert len(sets) == 4
    assert sets[0] == {"g": "1", "z": "a", "w": "A", "p": "x"}
    assert sets[3] == {"g": "2", "z": "b", "w": "B", "p": "x"}


@pytest.mark.parametrize("kwargs, message", [
    ({}, "needs parameters"),
    ({"grid": {"a": []}}, "has no values"),
    ({"grid": {"a": "123"}}, "give a list"),
    ({"grid": {"1a": ["x"]}}, "not valid"),
    ({"grid": {"a b": ["x"]}}, "not valid"),
    ({"grid": {"a": ["x"]}, "zip": {"a": ["y"]}}, "given twice"),
    ({"grid": {"a": [None]}}, "must be a string or a number"),
    ({"grid": {"a": [float("nan")]}}, "must be a string or a number"),
    ({"grid": {"a": [[1]]}}, "must be a string or a number"),
    ({"params": {"a": 1}}, "must be a list of parameter sets"),
    ({"params": [{}]}, "is empty"),
    ({"params": ["a=1"]}, "must be a mapping"),
])  # fmt: skip
def test_bad_parameters_fail_with_one_clear_message(kwargs, message) -> None:
    with pytest.raises(UsageError, match=message):
        expand(**kwargs)


def test_a_sweep_too_big_fails_before_expanding() -> None:
    axis = [str(i) for i in range(1000)]
    with pytest.raises(UsageError, match=f"more than the limit of {MAX_SETS}"):
        expand(grid={"a": axis, "b": axis, "c": axis})


# ------------------------------------------------------------------ templates
def test_render_fills_placeholders_inside_arguments_only() -> None:
    argv = render(["python3", "sim.py", "--alpha={alpha}", "--out", "run-{alpha}-{nx}.h5"],
                  {"alpha": "0.1", "nx": "32"})  # fmt: skip
    assert argv == ("python3", "sim.py", "--alpha=0.1", "--out", "run-0.1-32.h5")


def test_double_braces_are_literal_braces() -> None:
    argv = render(["python3", "-c", "print({{'a': {a}}})", "{{a}}"], {"a": "1"})
    assert argv == ("python3", "-c", "print({'a': 1})", "{a}")


def test_a_value_is_never_read_as_a_template() -> None:
    assert render(["{a}", "{b}"], {"a": "{b}", "b": "{{"}) == ("{b}", "{{")


@pytest.mark.parametrize("arg", ["{alpha", "alpha}", "{al{pha}", "{}", "{0}", "{a.b}", "{a:3}", "{ a }",
                                 "}{", "{{a}"])  # fmt: skip
def test_unbalanced_or_odd_braces_are_rejected(arg: str) -> None:
    with pytest.raises(UsageError, match="bad command template") as err:
        check_template(["echo", arg], {"a", "alpha"})
    assert "{{" in (err.value.hint or "")


def test_every_problem_of_a_template_is_in_one_error() -> None:
    with pytest.raises(UsageError) as err:
        check_template(["run", "{nope}", "{alpha", "{other}", "{nope}"], {"alpha"})
    msg = err.value.message
    assert "unknown placeholder(s) {nope}, {other}" in msg and "parameters: alpha" in msg
    assert "unbalanced '{'" in msg and "argument 2" in msg


def test_placeholders_lists_names_in_order() -> None:
    assert placeholders("{b}-{a}-{{x}}-{b}") == ["b", "a", "b"]
    with pytest.raises(UsageError):
        placeholders("{")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(HOSTILE), st.text(st.characters(blacklist_characters="\x00"))),
                min_size=1, max_size=4))  # fmt: skip
def test_hostile_values_survive_as_single_arguments(values: list[str]) -> None:
    names = [f"p{i}" for i in range(len(values))]
    template = ["prog", *(f"{{{n}}}" for n in names), "--tail={p0}"]
    argv = render(template, dict(zip(names, values, strict=True)))
    assert argv == ("prog", *values, f"--tail={values[0]}")


def test_hostile_values_reach_a_real_process_unchanged() -> None:
    sets = expand(grid={"v": HOSTILE[:-3] + ["ünïcødé ☃"]})
    for values in sets:
        argv = render(["python3", "-c", "import sys; print(repr(sys.argv[1:]))", "{v}", "x{v}y"], values)
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        assert out.strip() == repr([values["v"], "x" + values["v"] + "y"])


# ------------------------------------------------------------------ CLI spellings
def test_parse_axis() -> None:
    assert parse_axis("alpha=0.05,0.1,0.2") == ("alpha", ["0.05", "0.1", "0.2"])
    assert parse_axis("s=a b,,c") == ("s", ["a b", "", "c"])
    for bad, msg in [("alpha", "must look like"), ("alpha=", "has no values"), ("=1,2", "not valid")]:
        with pytest.raises(UsageError, match=msg):
            parse_axis(bad)
    with pytest.raises(UsageError, match="given twice"):
        parse_axes(["a=1", "a=2"])


def test_parse_params_lines() -> None:
    text = '{"alpha": 0.1, "nx": 32}\n\n{"alpha": "0.2", "nx": 64}\n'
    assert parse_params_lines(text) == [{"alpha": 0.1, "nx": 32}, {"alpha": "0.2", "nx": 64}]
    with pytest.raises(UsageError, match="f.jsonl:2: not JSON"):
        parse_params_lines('{"a": 1}\n{a: 1}\n', where="f.jsonl")
    with pytest.raises(UsageError, match="must be a JSON object"):
        parse_params_lines("[1, 2]\n")
    with pytest.raises(UsageError, match="no parameter sets"):
        parse_params_lines("\n \n")
