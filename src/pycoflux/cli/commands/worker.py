"""``coflux worker``: resolve the worker's settings and hand over to ``pycoflux.worker``.

Only steps 1-2 of cli.md §4.3 happen here (strict config, modules, token, adapter); their
errors print unprefixed. Everything after that belongs to the worker package.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from pycoflux import errors
from pycoflux.cli import blobstore, discovery, grammar, output
from pycoflux.cli.commands.manifests import NO_MODULES
from pycoflux.cli.context import Context
from pycoflux.cli.grammar import flag

NO_ADAPTER = "no adapter configured; run 'coflux setup' or add 'worker.adapter' to coflux.toml"
EXECUTOR_MODES = ("fork", "spawn", "reuse")


def build_config(
    obj: Context,
    *,
    modules: tuple[str, ...],
    adapter: tuple[str, ...],
    concurrency: int | None,
    provides: tuple[str, ...],
    accepts: tuple[str, ...],
    register: bool,
    watch: bool,
    dev: bool,
    session: str | None,
    drain_timeout: str,
    executor: str | None = None,
) -> Any:
    """A ``WorkerConfig`` from flags > env > coflux.toml > defaults."""
    from pycoflux.worker import config as worker_config

    obj.check_config()
    names = list(modules) or obj.strings("worker.modules")
    if not names:
        raise errors.ConfigError(NO_MODULES)
    token = obj.effective_token()
    argv = list(adapter) or obj.strings("worker.adapter") or discovery.detect_adapter()
    if not argv:
        raise errors.ConfigError(NO_ADAPTER)
    workers = concurrency if concurrency and concurrency > 0 else obj.integer("worker.concurrency")
    mode = obj.string("worker.executor", executor)
    if mode is not None and mode.strip().lower() not in EXECUTOR_MODES:
        raise errors.ConfigError(
            f"invalid executor mode {mode!r}; expected one of: {', '.join(EXECUTOR_MODES)}"
        )
    metrics_batch = obj.integer("metrics.batch_size")
    metrics_flush = obj.number("metrics.flush_interval")
    logs_flush = obj.number("logs.flush_interval")
    threshold = obj.integer("blobs.threshold")
    return worker_config.WorkerConfig(
        host=obj.host,
        secure=obj.secure,
        project=obj.project,
        token=token,
        workspace=obj.require_workspace(),
        # The session is env/flag only: it is never a valid coflux.toml key.
        session=session or obj.environ.get("COFLUX_SESSION") or None,
        adapter=tuple(argv),
        modules=tuple(names),
        concurrency=workers if workers and workers > 0 else worker_config.default_concurrency(),
        provides=(*obj.strings("worker.provides"), *provides),
        accepts=(*obj.strings("worker.accepts"), *accepts),
        register=register or dev,
        watch=watch or dev,
        drain_timeout=grammar.parse_duration(drain_timeout),
        blobs_threshold=100 if threshold is None else threshold,
        blob_stores=tuple(blobstore.stores(obj)),
        logs_batch_size=obj.integer("logs.batch_size") or 100,
        logs_flush_interval=0.5 if logs_flush is None or logs_flush < 0 else logs_flush,
        logs_token=obj.string("logs.token"),
        metrics_batch_size=metrics_batch if metrics_batch and metrics_batch > 0 else 100,
        metrics_flush_interval=(
            0.2 if metrics_flush is None else metrics_flush if metrics_flush > 0 else 0.5
        ),
        metrics_token=obj.string("metrics.token"),
        log_level=obj.log_level,
        executor=mode.strip().lower() if mode else None,
    )


@click.command(
    "worker",
    cls=grammar.Command,
    help="Start a worker that runs the targets of the given modules",
)
@click.argument("modules", nargs=-1)
@flag("--watch", kind="bool", help="Restart when .py files change")
@flag("--register", kind="bool", help="Register workflow manifests before connecting")
@flag("--dev", kind="bool", help="Same as --watch --register")
@flag("--concurrency", kind="int", help="Maximum concurrent executions")
@flag("--session", help="Use an existing session (else COFLUX_SESSION)")
@flag("--provides", kind="slice", help="Features this worker provides (key:value, repeatable)")
@flag("--accepts", kind="slice", help="Tags this worker accepts (key:value, repeatable)")
@flag("--adapter", kind="slice", help="Adapter command (comma-separated argv)")
@flag(
    "--executor",
    help="How executions get a process: fork (default on Linux/macOS), spawn or reuse",
)
@flag(
    "--drain-timeout",
    kind="duration",
    default="2m",
    show_default=True,
    help="How long to wait for running executions on shutdown (0 = forever)",
)
@click.pass_obj
def worker(obj: Context, /, **flags: Any) -> output.Rendered:
    config = build_config(obj, **flags)
    main = importlib.import_module("pycoflux.worker.main")
    code = main.run(config)
    return output.Text(exit_code=int(code or 0))


def register(root: click.Group) -> None:
    root.add_command(worker)
