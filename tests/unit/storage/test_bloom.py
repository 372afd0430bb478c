"""The Bloom filter layout of ``semantics.md`` §11.4."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pycoflux import errors
from pycoflux.storage.bloom import BloomFilter


@pytest.mark.parametrize(
    ("count", "m", "k"),
    [
        (0, 624, 4),  # at least 100 expected elements
        (100, 624, 4),
        (1000, 6240, 4),
        (1001, 6248, 4),  # 6246 bits, rounded up to whole bytes
    ],
)
def test_shape_follows_the_spec(count: int, m: int, k: int) -> None:
    bloom = BloomFilter.sized(count)
    assert (bloom.m, bloom.k) == (m, k)
    assert len(bloom.bits) == m // 8


def test_bit_positions_are_double_hashed_and_msb_first() -> None:
    bloom = BloomFilter.sized(1)
    bloom.add("Rabc")
    digest = hashlib.sha256(b"Rabc").digest()
    h1, h2 = int.from_bytes(digest[:8], "big"), int.from_bytes(digest[8:16], "big")
    expected = bytearray(bloom.m // 8)
    for i in range(bloom.k):
        p = (h1 + i * h2) % bloom.m
        expected[p // 8] |= 1 << (7 - p % 8)
    assert bloom.bits == expected


def test_serialisation_is_size_then_hash_count_then_bits() -> None:
    bloom = BloomFilter.of(["a", "b"])
    data = bloom.to_bytes()
    assert data[:4] == (624).to_bytes(4, "big")
    assert data[4] == 4
    assert data[5:] == bytes(bloom.bits)
    again = BloomFilter.from_bytes(data)
    assert "a" in again and "b" in again


@given(st.sets(st.text(min_size=1, max_size=20), max_size=300))
def test_no_false_negatives(keys: set[str]) -> None:
    bloom = BloomFilter.of(keys)
    assert all(key in bloom for key in keys)


def test_false_positives_are_rare() -> None:
    bloom = BloomFilter.of(f"R{i}" for i in range(1000))
    hits = sum(f"X{i}" in bloom for i in range(10_000))
    assert hits < 800  # (1 - e^(-4/6.24))^4 = ~5% at the spec's 6.24 bits per key and k=4


@pytest.mark.parametrize(
    "data", [b"", b"\x00\x00\x00\x08", b"\x00\x00\x00\x07\x01\x00", b"\x00\x00\x00\x10\x01\x00"]
)
def test_corrupt_filters_are_refused(data: bytes) -> None:
    with pytest.raises(errors.StoreError):
        BloomFilter.from_bytes(data)
