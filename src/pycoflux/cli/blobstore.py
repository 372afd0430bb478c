"""Blob reads through the configured stores, with the shared on-disk cache (cli.md §3.5).

Stores are tried in order (``blobs.stores``; none configured means the server's HTTP
store): a store that lacks the blob passes to the next one, any other failure stops.
HTTP stores go through ``cli/client.py``; S3 stores through boto3, imported only when
one is configured.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

from pycoflux import errors
from pycoflux.cli.context import Context

_KEY = re.compile(r"^[0-9a-f]{8,128}$")
_S3_MISSING = frozenset({"NoSuchKey", "NotFound", "404"})


def cache_path(key: str) -> Path | None:
    if not _KEY.match(key):
        return None  # never build paths from keys we didn't expect
    return Path(tempfile.gettempdir()) / "coflux-cache" / "blobs" / key[:2] / key[2:4] / key


def stores(ctx: Context) -> list[dict[str, Any]]:
    configured = ctx.raw("blobs.stores")
    if isinstance(configured, list):
        return [s for s in configured if isinstance(s, dict)]
    return []


def s3_object_key(prefix: str, key: str) -> str:
    """``[<prefix>/]<k[0:2]>/<k[2:4]>/<k[4:]>``: the layout the worker writes."""
    sharded = f"{key[0:2]}/{key[2:4]}/{key[4:]}"
    prefix = prefix.strip("/")
    return f"{prefix}/{sharded}" if prefix else sharded


def _from_s3(store: dict[str, Any], key: str) -> bytes | None:
    """The blob from an S3 store; None when the bucket doesn't have it."""
    bucket = store.get("bucket")
    if not isinstance(bucket, str) or not bucket:
        raise errors.ConfigError("an s3 blob store needs a bucket")
    try:
        import boto3
        import botocore.exceptions
    except ImportError:
        raise errors.ConfigError("s3 blob stores need boto3 (pip install boto3)") from None
    name = s3_object_key(str(store.get("prefix") or ""), key)
    region = store.get("region") or None
    try:
        client = boto3.session.Session().client("s3", region_name=region)
        data: bytes = client.get_object(Bucket=bucket, Key=name)["Body"].read()
    except botocore.exceptions.ClientError as e:
        if str(e.response.get("Error", {}).get("Code", "")) in _S3_MISSING:
            return None
        raise errors.ClientError(f"s3://{bucket}/{name}: {e}") from None
    except botocore.exceptions.BotoCoreError as e:
        raise errors.ServerUnreachableError(f"s3://{bucket}/{name}: {e}") from None
    return data


def _from_http(ctx: Context, store: dict[str, Any], key: str) -> bytes | None:
    try:
        return ctx.client.get_blob(key, [store])
    except errors.ServerUnreachableError:
        raise
    except errors.ClientError as e:
        if str(e).startswith("blob not found"):  # the store answered 404
            return None
        raise


def fetch(ctx: Context, key: str) -> bytes:
    """The blob's bytes; raises ``ClientError`` when no store has it."""
    path = cache_path(key)
    if path is not None and path.is_file():
        return path.read_bytes()
    data: bytes | None = None
    for store in stores(ctx) or [{"type": "http"}]:
        kind = store.get("type", "http")
        if kind == "s3":
            data = _from_s3(store, key)
        elif kind == "http":
            data = _from_http(ctx, store, key)
        else:
            continue  # as the worker does: an unknown store type is skipped
        if data is not None:
            break
    if data is None:
        raise errors.ClientError(f"blob not found: {key}")
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except OSError:
            pass  # the cache is an optimisation only
    return data
