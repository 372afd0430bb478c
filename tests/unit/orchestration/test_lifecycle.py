"""The retry decision (``semantics.md`` §3.3) and the select reply shape."""

from __future__ import annotations

import random

import pytest

from pycoflux.orchestration import lifecycle, model

C = model.Completion
MINUTE = 60_000


def delay(
    retries: model.Retries | None,
    previous: list[model.Completion | None],
    *,
    retryable: bool = True,
    seed: int = 0,
) -> int | None:
    return lifecycle.retry_delay(
        retries, retryable=retryable, previous=previous, rng=random.Random(seed)
    )


def test_no_retry_policy_means_no_retry() -> None:
    assert delay(None, []) is None


def test_limit_zero_means_no_retry() -> None:
    assert delay(model.Retries(limit=0, backoff_min=5, backoff_max=10), []) is None


def test_a_non_retryable_failure_is_final() -> None:
    assert delay(model.Retries(limit=3), [], retryable=False) is None
    assert delay(model.Retries(limit=None), [], retryable=False) is None


def test_backoff_grows_linearly_from_min_to_max() -> None:
    retries = model.Retries(limit=5, backoff_min=5 * MINUTE, backoff_max=10 * MINUTE)
    delays = []
    history: list[model.Completion | None] = []
    while (next_delay := delay(retries, history)) is not None:
        delays.append(next_delay)
        history.insert(0, C.ERRORED)
    # semantics.md §3.3 example: limit 5, backoff 300-600 s.
    assert delays == [300_000, 375_000, 450_000, 525_000, 600_000]


def test_limit_allows_exactly_that_many_retries() -> None:
    retries = model.Retries(limit=2)
    assert delay(retries, []) == 0
    assert delay(retries, [C.ERRORED]) == 0
    assert delay(retries, [C.ERRORED, C.ERRORED]) is None
    assert delay(retries, [C.ERRORED, C.ERRORED, C.ERRORED, C.ERRORED]) is None


def test_limit_one_uses_the_minimum_backoff() -> None:
    retries = model.Retries(limit=1, backoff_min=1000, backoff_max=9000)
    assert delay(retries, []) == 1000
    assert delay(retries, [C.TIMEOUT]) is None


@pytest.mark.parametrize(
    "failure", [C.ERRORED, C.ABANDONED, C.CRASHED, C.TIMEOUT, C.STREAM_ERRORED]
)
def test_every_failure_kind_counts_against_the_limit(failure: model.Completion) -> None:
    assert delay(model.Retries(limit=1), [failure]) is None


@pytest.mark.parametrize(
    "success", [C.SUCCEEDED, C.CANCELLED, C.SUSPENDED, C.RECURRED, C.SPAWNED, C.STREAM_TIMEOUT]
)
def test_counting_stops_at_the_first_non_failure(success: model.Completion) -> None:
    retries = model.Retries(limit=2, backoff_min=0, backoff_max=100)
    # Newest first: one failure, then a success, then older failures that no longer count.
    assert delay(retries, [C.ERRORED, success, C.ERRORED, C.ERRORED]) == 100
    assert delay(retries, [success, C.ERRORED, C.ERRORED]) == 0


def test_unlimited_retries_never_stop_and_stay_within_the_backoff_range() -> None:
    retries = model.Retries(limit=None, backoff_min=1000, backoff_max=2000)
    history: list[model.Completion | None] = [C.ERRORED] * 50
    delays = {delay(retries, history, seed=seed) for seed in range(50)}
    assert None not in delays
    assert all(1000 <= d < 2000 for d in delays if d is not None)
    assert len(delays) > 1  # drawn at random, not fixed


def test_unlimited_retries_without_a_range_are_immediate() -> None:
    assert delay(model.Retries(limit=None), [C.CRASHED] * 10) == 0


def test_select_result_shapes() -> None:
    value = lifecycle.Resolution(value=["raw", 1, []])
    assert lifecycle.select_result(2, value) == {
        "winner": 2,
        "status": "ok",
        "value": ["raw", 1, []],
    }
    error = lifecycle.Resolution(
        status="error",
        error=model.ErrorInfo(
            type="KeyError",
            message="k",
            frames=[["a.py", 3, "f", "x = d[k]"], ["b.py", 9, "g", None]],
        ),
    )
    assert lifecycle.select_result(0, error) == {
        "winner": 0,
        "status": "error",
        "error": {
            "type": "KeyError",
            "message": "k",
            "traceback": '  File "a.py", line 3, in f\n    x = d[k]\n  File "b.py", line 9, in g\n    ',
        },
    }
    bare = lifecycle.Resolution(status="error", error=model.ErrorInfo(type="E", message="m"))
    assert lifecycle.select_result(0, bare)["error"] == {"type": "E", "message": "m"}
    assert lifecycle.select_result(1, lifecycle.Resolution(status="cancelled")) == {
        "winner": 1,
        "status": "cancelled",
    }
