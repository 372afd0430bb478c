"""The Coflux worker: runs a project's targets through a language adapter for a server."""
