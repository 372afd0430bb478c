"""Assets: immutable, content-addressed collections of blobs (``semantics.md`` §2.13).

The same name and entries always give the same asset (and the same ``A...`` id), so
persisting a file twice creates nothing new. An execution that persists an asset is
linked to it; one that reads an asset records a dependency, for lineage.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

Entries = dict[str, list[Any]]  # path -> [blob key, size, metadata]


class AssetError(Exception):
    """Entries that do not have the documented shape."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Asset:
    id: int
    external_id: str
    name: str | None
    entries: Entries

    @property
    def total_count(self) -> int:
        return len(self.entries)

    @property
    def total_size(self) -> int:
        return sum(int(entry[1]) for entry in self.entries.values())

    def reference(self) -> list[Any]:
        """The worker-wire form of a reference to this asset."""
        return ["asset", self.external_id, self.name, self.total_count, self.total_size]


def normalise(entries: Any) -> Entries:
    if not isinstance(entries, dict):
        raise AssetError("entries must be {path: [blob key, size, metadata]}")
    result: Entries = {}
    for path, entry in entries.items():
        if (
            not isinstance(path, str)
            or not path
            or not isinstance(entry, list)
            or len(entry) < 2
            or not isinstance(entry[0], str)
            or not isinstance(entry[1], int)
            or isinstance(entry[1], bool)
            or entry[1] < 0
        ):
            raise AssetError("entries must be {path: [blob key, size, metadata]}")
        metadata = entry[2] if len(entry) > 2 and isinstance(entry[2], dict) else {}
        result[path] = [entry[0], entry[1], metadata]
    return result


def content_hash(name: str | None, entries: Entries) -> str:
    parts = [name or ""]
    for path, (blob_key, _size, metadata) in entries.items():
        parts += [path, blob_key, str(len(metadata))]
        for key in sorted(metadata):
            parts += [key, json.dumps(metadata[key], sort_keys=True, separators=(",", ":"))]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()
