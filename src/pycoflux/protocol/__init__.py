"""Wire shapes shared by the server, the worker and the CLI: decode/encode only, no I/O"""
