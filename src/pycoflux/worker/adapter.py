"""One adapter child process in ``execute`` mode, speaking JSON Lines over stdio."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import shutil
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from pycoflux import errors
from pycoflux.protocol import version
from pycoflux.worker import console

log = console.get_logger()

# Values up to the SDK's 64 KiB inline threshold plus references and multi-item stream
# pushes travel on one line; asyncio's default 64 KiB line limit would break on them.
LINE_LIMIT = 128 * 1024 * 1024
_STDERR_TAIL = 40
_PIPE_GRACE = 2.0  # seconds between an executor's exit and closing its output pipes


def detect_adapter(cwd: Path) -> tuple[str, ...]:
    """Pick the adapter command for a project directory (highest confidence wins)."""
    if (cwd / ".venv" / "bin" / "python").exists():
        return (".venv/bin/python", "-m", "coflux")
    if (cwd / "venv" / "bin" / "python").exists():
        return ("venv/bin/python", "-m", "coflux")
    if (cwd / "poetry.lock").exists():
        return ("poetry", "run", "python", "-m", "coflux")
    if (cwd / "uv.lock").exists():
        return ("uv", "run", "python", "-m", "coflux")
    if shutil.which("uv"):
        return ("uv", "run", "--with", "coflux", "python", "-m", "coflux")
    if shutil.which("python3"):
        return ("python3", "-m", "coflux")
    if shutil.which("python"):
        return ("python", "-m", "coflux")
    raise errors.ConfigError(
        "no adapter configured; run 'coflux setup' or add 'worker.adapter' to coflux.toml"
    )


def resolve_argv(argv: tuple[str, ...], cwd: Path) -> tuple[str, ...]:
    """Make a relative program path (``.venv/bin/python``) relative to the worker's cwd."""
    program = argv[0]
    if os.sep in program and not os.path.isabs(program):
        return (str(cwd / program), *argv[1:])
    return argv


def check_ready(message: Any) -> None:
    """Validate the adapter's first line (AP §5.2); raises ``AdapterError``."""
    if not isinstance(message, dict):
        raise errors.AdapterError("failed to parse ready message")
    if message.get("method") != "ready":
        raise errors.AdapterError(f"expected ready message, got {message.get('method')}")
    params = message.get("params")
    if not isinstance(params, dict) or "version" not in params:
        raise errors.AdapterError(
            "adapter did not send a protocol version; update the coflux Python package"
        )
    reported = str(params["version"])
    expected = version.API_VERSION
    if expected != "dev" and reported != "dev" and reported != expected:
        raise errors.AdapterError(
            f"adapter version mismatch: CLI expects protocol version {expected}, "
            f"but the adapter reports {reported} — update the coflux Python package"
        )


def _reject_constant(name: str) -> Any:
    # Non-finite numbers must never reach the server (strict JSON), so such lines are dropped.
    raise ValueError(f"non-finite number {name}")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def decode_line(line: bytes) -> Any:
    if line[:1] == b"{" and line[1:2] != b"\x00":
        # What ``json.loads`` would detect for such bytes (no BOM, not UTF-16/32): UTF-8.
        return _DECODER.decode(line.decode("utf-8", "surrogatepass"))
    return json.loads(line, parse_constant=_reject_constant)


def encode_line(message: Mapping[str, Any]) -> bytes:
    return (_ENCODER.encode(message) + "\n").encode()


class ChildProcess(Protocol):
    """An executor's OS process as the worker sees it: three pipes, a pid, an exit code."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    @property
    def stdin(self) -> asyncio.StreamWriter: ...

    @property
    def stdout(self) -> asyncio.StreamReader: ...

    @property
    def stderr(self) -> asyncio.StreamReader: ...

    async def wait(self) -> int: ...

    def kill(self) -> None:
        """SIGKILL the child and everything in its process group."""
        ...

    def close_pipes(self) -> None:
        """Close the read ends of stdout and stderr that are still open (child gone)."""
        ...


class SpawnedChild:
    """A child the worker started itself (``spawn`` and ``reuse`` modes)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdin and process.stdout and process.stderr
        self._process = process
        self.stdin = process.stdin
        self.stdout = process.stdout
        self.stderr = process.stderr

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    async def wait(self) -> int:
        return await self._process.wait()

    def close_pipes(self) -> None:
        pass  # asyncio's subprocess transport closes them once the process has exited

    def kill(self) -> None:
        if self._process.returncode is not None:
            return
        # The executor leads its own process group, so this also takes user subprocesses.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self._process.kill()


async def spawn_child(argv: tuple[str, ...], *, cwd: Path) -> SpawnedChild:
    """Start ``argv`` with piped stdio in its own session."""
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=LINE_LIMIT,
            # Own process group: a terminal Ctrl-C aimed at the worker must not reach
            # user code while the worker drains gracefully.
            start_new_session=True,
        )
    except OSError as exc:
        raise errors.AdapterError(f"cannot start adapter {argv[0]}: {exc}") from exc
    return SpawnedChild(process)


class AdapterProcess:
    """An executor: serialized writes, ordered reads, stderr drained in the background.

    ``reusable`` processes (reuse mode) announce the end of each execution with another
    ``ready`` line and then wait for the next ``execute``.
    """

    def __init__(
        self, process: ChildProcess, argv: tuple[str, ...], *, reusable: bool = False
    ) -> None:
        self._process = process
        self.argv = argv
        self.reusable = reusable
        self.label: str | None = None  # the execution id once bound, for stderr lines
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL)
        self._write_lock = asyncio.Lock()
        self._stderr_task = asyncio.create_task(
            self._drain_stderr(), name=f"adapter-stderr-{process.pid}"
        )

    @classmethod
    async def spawn(
        cls, argv: tuple[str, ...], *, cwd: Path, ready_timeout: float
    ) -> AdapterProcess:
        """Start ``<argv> execute`` and wait for a valid ``ready`` line."""
        child = await spawn_child((*argv, "execute"), cwd=cwd)
        return await cls.attach(child, argv, ready_timeout=ready_timeout)

    @classmethod
    async def attach(
        cls,
        child: ChildProcess,
        argv: tuple[str, ...],
        *,
        ready_timeout: float,
        reusable: bool = False,
    ) -> AdapterProcess:
        """Wrap a started child and wait for its ``ready`` line; kill it on failure."""
        adapter = cls(child, argv, reusable=reusable)
        try:
            async with asyncio.timeout(ready_timeout):
                line = await adapter._readline()
            if not line:
                raise errors.AdapterError("executor closed before ready")
            try:
                message = decode_line(line)
            except ValueError:
                raise errors.AdapterError("failed to parse ready message") from None
            check_ready(message)
        except TimeoutError:
            await adapter.kill()
            raise errors.AdapterError("executor closed before ready (timed out)") from None
        except BaseException:
            await adapter.kill()
            raise
        return adapter

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def alive(self) -> bool:
        return self._process.returncode is None

    async def _readline(self) -> bytes:
        stdout = self._process.stdout
        try:
            return await stdout.readline()
        except ValueError as exc:
            # Over-long line: the reader has discarded it; report and carry on.
            log.warning("adapter line too long", extra=console.fields(execution_id=self.label))
            raise errors.AdapterError("adapter line too long") from exc

    async def read_message(self) -> dict[str, Any] | None:
        """The next JSON object from stdout; non-JSON lines are logged and skipped; None at EOF."""
        while True:
            try:
                line = await self._readline()
            except errors.AdapterError:
                continue
            except (ConnectionError, OSError):
                return None
            if not line:
                return None
            if not line.strip():
                continue
            try:
                message = decode_line(line)
            except ValueError:
                log.warning(
                    "ignoring non-JSON adapter output",
                    extra=console.fields(
                        execution_id=self.label, line=line[:200].decode("utf-8", "replace").rstrip()
                    ),
                )
                continue
            if isinstance(message, dict):
                return message
            log.warning(
                "ignoring non-object adapter message", extra=console.fields(execution_id=self.label)
            )

    async def write(self, message: Mapping[str, Any]) -> None:
        """Write one line; raises ``AdapterError`` when stdin is gone."""
        data = encode_line(message)
        stdin = self._process.stdin
        if not self._write_lock.locked() and not stdin.is_closing():
            # Nobody waits for the pipe: write now, and wait only if it did not all go.
            try:
                stdin.write(data)
            except (ConnectionError, OSError) as exc:
                raise errors.AdapterError(f"cannot write to executor: {exc}") from exc
            if not stdin.transport.get_write_buffer_size() and not stdin.is_closing():
                return
            data = b""
        async with self._write_lock:
            if stdin.is_closing():
                raise errors.AdapterError("executor stdin is closed")
            try:
                if data:
                    stdin.write(data)
                await stdin.drain()
            except (ConnectionError, OSError) as exc:
                raise errors.AdapterError(f"cannot write to executor: {exc}") from exc

    def close_stdin(self) -> None:
        stdin = self._process.stdin
        if not stdin.is_closing():
            stdin.close()

    def _signal_kill(self) -> None:
        if self._process.returncode is None:
            self._process.kill()

    async def kill(self) -> None:
        """Close stdin, SIGKILL at once, reap."""
        self.close_stdin()
        self._signal_kill()
        await self._reap()

    async def stop(self, grace: float) -> None:
        """Close stdin and give the adapter ``grace`` seconds to exit before killing it."""
        self.close_stdin()
        try:
            async with asyncio.timeout(grace):
                await self._process.wait()
        except TimeoutError:
            self._signal_kill()
        await self._reap()

    async def _reap(self) -> None:
        await self._process.wait()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await asyncio.shield(self._stderr_task)
        # Whoever still reads stdout has a moment to take what is left; then the pipes go,
        # whichever way the process ended (an execution's end, a surplus warm executor).
        asyncio.get_running_loop().call_later(_PIPE_GRACE, self._process.close_pipes)

    def kill_now(self) -> None:
        """Synchronous kill for the emergency exit path."""
        self._signal_kill()

    async def _drain_stderr(self) -> None:
        stderr = self._process.stderr
        while True:
            try:
                line = await stderr.readline()
            except ValueError:
                continue
            except (ConnectionError, OSError):
                return
            if not line:
                return
            text = line.decode("utf-8", "replace").rstrip("\n")
            self.stderr_tail.append(text)
            log.debug(
                "adapter stderr",
                extra=console.fields(execution_id=self.label, pid=self.pid, line=text),
            )
