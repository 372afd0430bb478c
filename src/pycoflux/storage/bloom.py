"""Bloom filters over the keys of an archived epoch (``semantics.md`` §11.4).

The layout is fixed by the spec so that an index written by one implementation can be
read by another: ``m`` bits (a whole number of bytes), ``k`` probes derived from one
SHA-256 by double hashing, MSB-first bit order, serialised as 4-byte big-endian ``m``,
1-byte ``k``, then the bits.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

from pycoflux import errors

MIN_ELEMENTS = 100
BITS_PER_ELEMENT = 6.24  # with k=4: ~5% false positives (only costs an extra file open)
LN2 = 0.6931


def _round(x: float) -> int:
    # Half away from zero, like the reference implementation (Python's round() is banker's).
    return math.floor(x + 0.5)


def _as_bytes(key: str | bytes) -> bytes:
    return key.encode() if isinstance(key, str) else key


class BloomFilter:
    """A fixed-size Bloom filter; membership tests can give false positives, never negatives."""

    __slots__ = ("bits", "k", "m")

    def __init__(self, m: int, k: int, bits: bytearray | None = None) -> None:
        if m <= 0 or m % 8 or not 1 <= k <= 255:
            raise errors.StoreError(f"invalid Bloom filter shape: m={m}, k={k}")
        self.m = m
        self.k = k
        self.bits = bits if bits is not None else bytearray(m // 8)
        if len(self.bits) != m // 8:
            raise errors.StoreError("Bloom filter bit array does not match its size")

    @classmethod
    def sized(cls, count: int) -> BloomFilter:
        """An empty filter shaped for ``count`` keys."""
        n = max(MIN_ELEMENTS, count)
        m = max(64, _round(BITS_PER_ELEMENT * n))
        m = (m + 7) // 8 * 8
        k = max(1, _round(m / n * LN2))
        return cls(m, k)

    @classmethod
    def of(cls, keys: Iterable[str | bytes]) -> BloomFilter:
        distinct = {_as_bytes(key) for key in keys}
        bloom = cls.sized(len(distinct))
        for key in distinct:
            bloom.add(key)
        return bloom

    def _positions(self, key: str | bytes) -> Iterable[int]:
        digest = hashlib.sha256(_as_bytes(key)).digest()
        h1 = int.from_bytes(digest[0:8], "big")
        h2 = int.from_bytes(digest[8:16], "big")
        # Python ints do not wrap: the spec asks for unbounded arithmetic here.
        return ((h1 + i * h2) % self.m for i in range(self.k))

    def add(self, key: str | bytes) -> None:
        for p in self._positions(key):
            self.bits[p // 8] |= 0x80 >> (p % 8)

    def __contains__(self, key: str | bytes) -> bool:
        return all(self.bits[p // 8] & (0x80 >> (p % 8)) for p in self._positions(key))

    def to_bytes(self) -> bytes:
        return self.m.to_bytes(4, "big") + bytes([self.k]) + bytes(self.bits)

    @classmethod
    def from_bytes(cls, data: bytes) -> BloomFilter:
        if len(data) < 5:
            raise errors.StoreError("truncated Bloom filter")
        return cls(int.from_bytes(data[0:4], "big"), data[4], bytearray(data[5:]))
