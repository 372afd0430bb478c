"""Pool definitions as pure functions: validation, update patches, hashes (semantics.md §2.16)."""

from __future__ import annotations

import hashlib

import pytest

from pycoflux.orchestration import pools

ENABLED = ("process", "docker", "kubernetes")


def test_parse_normalises_and_ignores_unknown_keys() -> None:
    pool = pools.parse_pool(
        {
            "modules": "app.*",
            "provides": {"gpu": True, "zone": ["a", "b"]},
            "launcher": {"type": "process", "directory": "/srv", "whatever": 1},
            "extra": "ignored",
        },
        ENABLED,
    )
    assert pool == pools.Pool(
        modules=("app.*",),
        provides={"gpu": ["true"], "zone": ["a", "b"]},
        launcher={"type": "process", "directory": "/srv"},
    )


@pytest.mark.parametrize(
    "value",
    [
        {"modules": ["a..b"]},
        {"modules": ["x" * 101]},
        {"provides": {"bad key!": "v"}},
        {"launcher": {"type": "process"}},  # directory is required
        {"launcher": {"type": "ecs", "directory": "/"}},
        {"launcher": {"type": "process", "directory": "/", "env": {"coflux_x": "1"}}},
        {"launcher": {"type": "process", "directory": "/", "adapter": []}},
        {"launcher": {"type": "process", "directory": "/", "concurrency": 0}},
        {"launcher": {"type": "kubernetes", "image": "i", "imagePullPolicy": "Sometimes"}},
        "not an object",
    ],
)
def test_invalid_pools(value: object) -> None:
    with pytest.raises(pools.InvalidPoolError):
        pools.parse_pool(value, ENABLED)


def test_a_type_must_be_enabled() -> None:
    launcher = {"type": "docker", "image": "i"}
    with pytest.raises(pools.InvalidPoolError):
        pools.parse_pool({"launcher": launcher}, ("process",))
    assert pools.parse_pool({"launcher": None}, ()).launcher is None


def test_patch_merges_launcher_fields_and_env() -> None:
    current = pools.Pool(
        modules=("a",),
        provides={"k": ["v"]},
        launcher={"type": "docker", "image": "i", "concurrency": 2, "env": {"A": "1", "B": "2"}},
    )
    patch = pools.check_patch(
        {"provides": None, "launcher": {"concurrency": None, "env": {"A": None, "C": "3"}}},
        ENABLED,
    )
    assert pools.merge(current, patch) == pools.Pool(
        modules=("a",),
        launcher={"type": "docker", "image": "i", "env": {"B": "2", "C": "3"}},
    )
    with pytest.raises(pools.TypeChangeError):
        pools.merge(current, pools.check_patch({"launcher": {"type": "process"}}, ENABLED))
    with pytest.raises(pools.InvalidPoolError):
        pools.check_patch({"launcher": {"env": {"COFLUX_HOST": "x"}}}, ENABLED)
    with pytest.raises(pools.InvalidPoolError):
        pools.merge(current, pools.check_patch({"launcher": {"directory": "/x"}}, ENABLED))
    assert pools.merge(current, {"launcher": None}).launcher is None


def test_hashes() -> None:
    assert pools.tag_set_hash({}) is None
    assert (
        pools.tag_set_hash({"b": ["2", "1"], "a": ["x"]})
        == hashlib.sha256(b"a=x;b=1,2").hexdigest()
    )
    one = pools.Pool(modules=("b", "a"), launcher={"type": "process", "directory": "/"})
    same = pools.Pool(modules=("a", "b"), launcher={"directory": "/", "type": "process"})
    other = pools.Pool(modules=("a", "b"), launcher={"type": "process", "directory": "/x"})
    assert pools.definition_hash(one) == pools.definition_hash(same)
    assert pools.definition_hash(one) != pools.definition_hash(other)
    etag = pools.pools_etag({"p": pools.definition_hash(one)})
    assert etag != pools.pools_etag({"p": pools.definition_hash(other)})
    assert etag != pools.pools_etag({"q": pools.definition_hash(one)})
    assert pools.pools_etag({}) == hashlib.sha256(b"").hexdigest()


def test_topic_form_hides_secrets_and_export_keeps_them() -> None:
    launcher = {"type": "kubernetes", "image": "i", "token": "t", "caCert": "c", "namespace": "n"}
    pool = pools.Pool(modules=("a",), launcher=launcher)
    assert pools.topic(pool, disabled=True) == {
        "modules": ["a"],
        "provides": {},
        "accepts": {},
        "launcher": {"type": "kubernetes", "image": "i", "namespace": "n"},
        "state": "disabled",
    }
    assert pools.export(pool) == {"modules": ["a"], "launcher": launcher}
