"""Value conversion between the adapter's Value objects and the server's wire arrays."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

from pycoflux import errors
from pycoflux.worker.blobs import BlobManager

AdapterValue = dict[str, Any]
ServerValue = list[Any]  # ["raw", data, refs] | ["blob", key, size, refs]


class ValueFormatError(errors.WorkerError):
    """A value had an unexpected shape."""


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode_json(data: Any) -> bytes:
    """Compact strict JSON, the byte form measured against the blob threshold."""
    try:
        return _ENCODER.encode(data).encode()
    except ValueError as exc:
        raise ValueFormatError(f"value is not strict JSON: {exc}") from exc


class ValueCodec:
    """Converts values in both directions, moving large data through blob storage."""

    def __init__(self, blobs: BlobManager, threshold: int) -> None:
        self.blobs = blobs
        self.threshold = threshold

    # --- adapter -> server -----------------------------------------------------------

    async def to_server(self, value: Any) -> ServerValue:
        if value is None:
            return ["raw", None, []]
        if not isinstance(value, dict):
            raise ValueFormatError("value is not an object")
        references = await self._references_to_server(value.get("references"))
        kind = value.get("type")
        if kind == "inline":
            data = value.get("value")
            if data is None:
                return ["raw", None, references]
            encoded = encode_json(data)
            if len(encoded) > self.threshold:
                key = await self.blobs.put_bytes(encoded)
                return ["blob", key, len(encoded), references]
            return ["raw", data, references]
        if kind == "file":
            path = value.get("path")
            if not isinstance(path, str) or not path:
                raise ValueFormatError("file value without a path")
            key, size = await self.blobs.put_file(Path(path))
            return ["blob", key, size, references]
        raise ValueFormatError(f"unknown value type: {kind!r}")

    async def _references_to_server(self, references: Any) -> list[Any]:
        if not references:
            return []
        if not isinstance(references, list):
            raise ValueFormatError("references is not a list")
        result: list[Any] = []
        for reference in references:
            if (
                isinstance(reference, list)
                and len(reference) >= 5
                and reference[0] == "fragment"
                and isinstance(reference[2], str)
                and reference[2]
            ):
                key, _size = await self.blobs.put_file(Path(reference[2]))
                result.append(["fragment", reference[1], key, reference[3], reference[4]])
            else:
                result.append(reference)
        return result

    # --- server -> adapter -----------------------------------------------------------

    async def to_adapter(self, value: Any) -> AdapterValue:
        if not isinstance(value, list) or len(value) < 3:
            raise ValueFormatError(f"malformed server value: {value!r:.100}")
        kind = value[0]
        result: AdapterValue
        if kind == "raw":
            references = value[2]
            result = {"type": "inline", "format": "json"}
            if value[1] is not None:
                result["value"] = value[1]
        elif kind == "blob" and len(value) >= 4 and isinstance(value[1], str):
            references = value[3]
            path = await self.blobs.fetch(value[1])
            result = {"type": "file", "format": "json", "path": str(path)}
        else:
            raise ValueFormatError(f"malformed server value: {value!r:.100}")
        converted = await self._references_to_adapter(references)
        if converted:
            result["references"] = converted
        return result

    async def _references_to_adapter(self, references: Any) -> list[Any]:
        if not references:
            return []
        if not isinstance(references, list):
            raise ValueFormatError("references is not a list")
        result: list[Any] = []
        for reference in references:
            if (
                isinstance(reference, list)
                and len(reference) >= 5
                and reference[0] == "fragment"
                and isinstance(reference[2], str)
            ):
                path = await self.blobs.fetch(reference[2])
                result.append(["fragment", reference[1], str(path), reference[3], reference[4]])
            else:
                result.append(reference)
        return result

    # --- adapter -> log store ----------------------------------------------------------

    async def to_log_value(self, value: Any) -> dict[str, Any]:
        """A log placeholder value in the log API's object form (files are consumed)."""
        if not isinstance(value, dict):
            return {"type": "raw", "references": []}
        references = await self._references_to_log(value.get("references"))
        kind = value.get("type")
        encoded: bytes | None = None
        if kind == "inline":
            encoded = encode_json(value.get("value"))
        elif kind == "file" and isinstance(value.get("path"), str):
            path = Path(value["path"])
            try:
                encoded = await asyncio.to_thread(path.read_bytes)
            except OSError:
                encoded = None
            else:
                await _remove(path)
        if encoded is None:
            return {"type": "raw", "references": references}
        if len(encoded) > self.threshold:
            key = await self.blobs.put_bytes(encoded)
            return {"type": "blob", "key": key, "size": len(encoded), "references": references}
        try:
            data = json.loads(encoded)
        except ValueError:
            return {"type": "raw", "references": references}
        return {"type": "raw", "data": data, "references": references}

    async def _references_to_log(self, references: Any) -> list[dict[str, Any]]:
        if not isinstance(references, list):
            return []
        result: list[dict[str, Any]] = []
        for reference in references:
            if not isinstance(reference, list) or not reference:
                continue
            kind = reference[0]
            padded = [*reference, None, None, None, None, None][:5]
            if kind == "fragment":
                blob_key = ""
                if isinstance(padded[2], str) and padded[2]:
                    path = Path(padded[2])
                    try:
                        blob_key, _size = await self.blobs.put_file(path)
                    except errors.WorkerError:
                        blob_key = ""
                    else:
                        await _remove(path)
                result.append(
                    {
                        "type": "fragment",
                        "format": padded[1],
                        "blobKey": blob_key,
                        "size": padded[3],
                        "metadata": padded[4] or {},
                    }
                )
            elif kind == "execution":
                result.append(
                    {
                        "type": "execution",
                        "executionId": padded[1],
                        "module": padded[2],
                        "target": padded[3],
                    }
                )
            elif kind == "asset":
                result.append(
                    {
                        "type": "asset",
                        "assetId": padded[1],
                        "name": padded[2],
                        "totalCount": padded[3],
                        "totalSize": padded[4],
                    }
                )
            elif kind == "input":
                result.append({"type": "input", "inputId": padded[1]})
        return result


async def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        await asyncio.to_thread(path.unlink)
