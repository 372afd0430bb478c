"""The Cobra-compatible command-line grammar (cli.md §1.1)."""

from __future__ import annotations

import pytest

from pycoflux.cli import grammar
from pycoflux.cli.main import cli


def norm(*argv: str) -> list[str]:
    return grammar.normalise(cli, list(argv))


def test_global_flags_before_and_after_the_command_path_are_equivalent() -> None:
    before = norm("-o", "json", "--host", "h:1", "submit", "--no-wait", "m/t", "1")
    after = norm("submit", "m/t", "1", "-o", "json", "--host", "h:1", "--no-wait")
    assert sorted(before) == sorted(after)
    assert before[:2] == ["--output=json", "--host=h:1"] or set(before[:2]) == {
        "--output=json",
        "--host=h:1",
    }
    assert before[-3:] == ["--", "m/t", "1"]


def test_global_flag_between_group_and_subcommand() -> None:
    assert norm("runs", "-w", "dev", "result", "R") == [
        "--workspace=dev",
        "runs",
        "result",
        "--",
        "R",
    ]


def test_persistent_group_flag_accepts_values_starting_with_dash() -> None:
    out = norm("manifests", "--adapter", "python3,x.py,--manifest,m.json", "register", "m")
    assert out == [
        "manifests",
        "--adapter=python3",
        "--adapter=x.py",
        "--adapter=--manifest",
        "--adapter=m.json",
        "register",
        "--",
        "m",
    ]
    # and the same flag after the subcommand (persistent flags are inherited)
    assert norm("manifests", "register", "m", "--adapter", "a,b", "--adapter", "c")[:4] == [
        "manifests",
        "--adapter=a",
        "--adapter=b",
        "--adapter=c",
    ]


@pytest.mark.parametrize("spelling", [["-o", "json"], ["-ojson"], ["-o=json"], ["--output=json"]])
def test_short_and_long_value_spellings(spelling: list[str]) -> None:
    assert norm(*spelling, "runs", "result", "R")[0] == "--output=json"


@pytest.mark.parametrize(
    ("value", "expected"), [("true", True), ("1", True), ("false", False), ("F", False)]
)
def test_boolean_flags_accept_explicit_values(value: str, expected: bool) -> None:
    out = norm("submit", f"--no-wait={value}", "m/t")
    assert ("--no-wait" in out) is expected


def test_slice_flags_are_csv_split_and_quotes_protect_commas() -> None:
    out = norm("submit", "m/t", "--requires", 'gpu:A100,"x:a,b"', "--requires", "region:eu")
    assert [o for o in out if o.startswith("--requires")] == [
        "--requires=gpu:A100",
        "--requires=x:a,b",
        "--requires=region:eu",
    ]


def test_array_flags_are_not_split() -> None:
    out = norm("pools", "create", "p", "--type", "process", "--set", 'adapter=["a","b"]')
    assert '--set=adapter=["a","b"]' in out


def test_double_dash_ends_flags() -> None:
    assert norm("submit", "m/t", "--", "--no-wait")[-3:] == ["--", "m/t", "--no-wait"]


def test_negative_numbers_are_positionals() -> None:
    assert norm("submit", "m/t", "-1", "-2.5")[-3:] == ["m/t", "-1", "-2.5"]


def test_last_scalar_occurrence_wins() -> None:
    assert norm("--host", "a", "--host", "b", "runs", "result", "R")[0] == "--host=b"


def test_local_flag_shadows_global_flag() -> None:
    out = norm("blobs", "get", "K", "-o", "/tmp/f")
    assert out == ["blobs", "get", "--output=/tmp/f", "--", "K"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["submit", "--bogus", "m/t"], "unknown flag: --bogus"),
        (["submit", "-x", "m/t"], "unknown shorthand flag: 'x' in -x"),
        (["submit", "m/t", "--idempotency-key"], "flag needs an argument: --idempotency-key"),
        (
            ["worker", "--concurrency", "abc", "m"],
            'invalid argument "abc" for "--concurrency" flag',
        ),
        (["server", "-p", "x"], 'invalid argument "x" for "-p, --port" flag'),
        (["submit", "--no-wait=maybe", "m/t"], 'invalid argument "maybe" for "--no-wait" flag'),
        (["worker", "--drain-timeout", "5x", "m"], 'unknown unit "x"'),
        (["submit"], "requires at least 1 arg(s), only received 0"),
        (["runs", "result"], "accepts 1 arg(s), received 0"),
        (["logs", "a", "b", "c"], "accepts between 1 and 2 arg(s), received 3"),
        (["bogus"], 'unknown command "bogus" for "coflux"'),
    ],
)
def test_usage_errors(argv: list[str], message: str) -> None:
    with pytest.raises(grammar.UsageFailure) as info:
        norm(*argv)
    assert message in info.value.message


def test_required_flag_and_exclusive_groups_have_no_usage_text() -> None:
    with pytest.raises(grammar.UsageFailure) as info:
        norm("pools", "create", "p")
    assert info.value.message == 'required flag(s) "type" not set'
    assert info.value.usage is None
    with pytest.raises(grammar.UsageFailure) as info:
        norm("submit", "--memo", "--no-memo", "m/t")
    assert info.value.message == (
        "if any flags in the group [memo no-memo] are set none of the others can be; "
        "[memo no-memo] were all set"
    )


def test_groups_and_help() -> None:
    assert norm() == ["--help"]
    assert norm("runs") == ["runs", "--help"]
    assert norm("runs", "bogus") == ["runs", "--help"]
    assert norm("help", "runs", "result") == ["runs", "result", "--help"]
    assert norm("submit", "-h") == ["submit", "--help"]
    assert norm("--version") == ["--version"]
    assert norm("-v") == ["--version"]


def test_extra_positionals_are_dropped_for_commands_without_a_rule() -> None:
    assert norm("workspaces", "pause", "extra") == ["workspaces", "pause", "--"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0.0), ("2m", 120.0), ("30s", 30.0), ("1m30s", 90.0), ("1.5h", 5400.0), ("250ms", 0.25)],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert grammar.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "abc", "5x", "m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="time: "):
        grammar.parse_duration(text)


def test_arg_rule_messages() -> None:
    assert grammar.Args(0, 1).check(2) == "accepts at most 1 arg(s), received 2"
    assert grammar.exact(2).check(2) is None
