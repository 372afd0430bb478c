"""Release and API versions, and the rule that derives one from the other."""

from __future__ import annotations

import pycoflux

SERVER_VERSION = pycoflux.__version__


def derive_api_version(version: str) -> str:
    """Map a release string to its API version: ``0.12.3`` -> ``0.12``, ``1.4.0`` -> ``1``."""
    if version in ("", "dev"):
        return "dev"
    parts = version.split("-", 1)[0].split(".")
    if len(parts) < 2:
        return version
    try:
        major, minor = int(parts[0]), int(parts[1])
    except ValueError:
        return version
    return f"0.{minor}" if major == 0 else str(major)


API_VERSION = derive_api_version(SERVER_VERSION)
