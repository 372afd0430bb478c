"""Every pycoflux exception, grouped by cause. Each docstring is the default message."""

from __future__ import annotations


class CofluxError(Exception):
    """Something went wrong in pycoflux."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


# --- Configuration -------------------------------------------------------------


class ConfigError(CofluxError):
    """The configuration is invalid."""


# --- Storage -------------------------------------------------------------------


class StoreError(CofluxError):
    """The project store failed."""


# --- Talking to a server ---------------------------------------------------------


class ClientError(CofluxError):
    """A request to the Coflux server failed."""


class ServerUnreachableError(ClientError):
    """The Coflux server could not be reached."""


class VersionMismatchError(ClientError):
    """The server speaks another API version."""


# --- Worker ---------------------------------------------------------------------


class WorkerError(CofluxError):
    """The worker failed."""


class DiscoveryError(WorkerError):
    """The adapter could not discover the modules' targets."""


class AdapterError(WorkerError):
    """An adapter process misbehaved."""


class SessionLostError(WorkerError):
    """The connection to the server was lost."""


class FatalSessionError(WorkerError):
    """The server refused the worker's session for good."""
