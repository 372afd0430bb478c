"""pycoflux: the Coflux workflow platform in Python (server, worker and CLI)."""

from __future__ import annotations

__version__ = "0.12.0"
