"""Log lines: one JSON object a line (lines for people on a terminal), each with the
correlation id of the request it was logged in, and one access line per request.

`configure()` is called once by each serving or worker process (`billfold serve`, the
ASGI module, `billfold worker ...`). Every module keeps logging through the standard
library (`logging.getLogger("billfold.x")`); the root logger's one handler formats each
record where it is logged and leaves the line with the sink (`_Sink`), which writes many
lines to a write, from the event loop, a few times a second, and never while stderr
would block.

The correlation id is a context variable the request guard sets (`CORRELATION`): each
request runs in its own task, so every line logged while serving it carries its id. The
access line is the request's cheapest line: the guard leaves the sink a tuple, which is
made a line when the batch is written. No thread: in a busy server a second thread that
wants the GIL makes each of the event loop's system calls dearer (decision 0027). See
also docs/operating.md#logs.
"""

from __future__ import annotations

import asyncio
import atexit
import io
import logging
import os
import select
import signal
import stat
import sys
import threading
import time
from collections import deque
from contextvars import ContextVar
from datetime import UTC, datetime
from json.encoder import encode_basestring as _string
from typing import IO, Any, Literal

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

Format = Literal["auto", "json", "console"]

# The correlation id of the request being served (None outside a request).
CORRELATION: ContextVar[str | None] = ContextVar("billfold_correlation_id", default=None)

ACCESS_LOGGER = "billfold.access"
# Not fields of a line: the record's own attributes, and uvicorn's colored message copy.
_STANDARD = frozenset(RESERVED_ATTRS) | {"message", "asctime", "taskName", "color_message"}
# method, path, status, duration in ms, correlation id, tenant id, created (Unix s)
AccessEntry = tuple[str, str, int, float, str, str | None, float]


_second: tuple[int, str] = (0, "")


def _instant(created: float) -> str:
    """A record's time as ISO 8601 in UTC, to the millisecond: 2026-12-07T03:57:18.123Z.
    The part up to the second is made once a second."""
    global _second
    whole = int(created)
    second, prefix = _second
    if whole != second:
        prefix = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second = (whole, prefix)
    return f"{prefix}.{int(created * 1000) % 1000:03d}Z"


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and k[0] != "_"}


class Lines(logging.Formatter):
    """A formatter that also writes access entries, straight from their tuple."""

    def access(self, entry: AccessEntry) -> str:
        return self.format(access_record(*entry))


class JsonLines(JsonFormatter, Lines):
    """timestamp, level, logger, message, correlation_id, then the record's extra fields
    (`log.info("...", extra={"key": value})`), and `exc_info` with a traceback."""

    def __init__(self) -> None:
        super().__init__(
            ["levelname", "name", "message"],
            rename_fields={"levelname": "level", "name": "logger"},
            reserved_attrs=[*RESERVED_ATTRS, "color_message"],
            json_ensure_ascii=False,
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data["timestamp"] = _instant(record.created)
        super().add_fields(log_data, record, message_dict)
        log_data.setdefault("correlation_id", None)

    def access(self, entry: AccessEntry) -> str:
        """The same line `format` would write for the record, made by hand in a fraction
        of the time: it is the busiest line there is. The correlation id and the tenant
        id need no escaping: the guard keeps only [A-Za-z0-9._:-] ids, and tenant ids are
        ours."""
        method, path, status, duration_ms, correlation_id, tenant_id, created = entry
        tenant = "null" if tenant_id is None else f'"{tenant_id}"'
        method, path = _string(method), _string(path)
        return (
            f'{{"timestamp": "{_instant(created)}", "level": "INFO", '
            f'"logger": "{ACCESS_LOGGER}", "message": "{method[1:-1]} {path[1:-1]} '
            f'{status} {duration_ms:.1f} ms", "method": {method}, "path": {path}, '
            f'"status": {status}, "duration_ms": {duration_ms:.3f}, '
            f'"correlation_id": "{correlation_id}", "tenant_id": {tenant}}}'
        )


class ConsoleLines(Lines):
    """`2026-12-07T03:57:18.123Z INFO  billfold.access GET /v1/ping 200 0.8 ms
    correlation_id=... tenant_id=...`, and a traceback below when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in _extras(record).items() if v is not None)
        line = (
            f"{_instant(record.created)} {record.levelname:<7} {record.name} "
            f"{record.getMessage()}{'  ' + extras if extras else ''}"
        )
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


class _Handler(logging.Handler):
    """The root logger's one handler: formats the record where it is logged (the
    correlation id is a context variable of the task logging it) and leaves the line
    with the sink."""

    def __init__(self, sink: _Sink) -> None:
        super().__init__()
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        if "correlation_id" not in record.__dict__:
            record.correlation_id = CORRELATION.get()
        self.sink.add(self.sink.format(record))


class _Sink:
    """Lines waiting to be written to a stream, and the writing of them.

    A line is left here (`add`, from any thread); within `interval_s` the event loop
    that left it writes every line waiting, `lines_per_write` lines at most at a time, or
    right away once that many wait; a thread with no event loop (the CLI, a test) writes
    at once. At 10,000 requests a second, one write a line would be 10,000 system calls.

    A stream with a file descriptor is written with `os.write`, whole lines to a write,
    so that the lines of several processes sharing stderr never cut into one another,
    and only when `poll` says the descriptor takes more: a pipe nobody reads stalls
    the log, never the event loop. Past `max_waiting` lines, lines are dropped and
    counted, and a WARNING line says how many once the stream takes lines again."""

    interval_s = 0.05
    lines_per_write = 512
    bytes_per_write = 4096  # PIPE_BUF: what a pipe that polls writable takes at once
    max_waiting = 100_000

    def __init__(self, stream: IO[str], lines: Lines) -> None:
        self.stream, self.lines = stream, lines
        # Lines, or access entries (made lines when written); deque ends are safe
        # between threads without a lock.
        self.waiting: deque[str | AccessEntry] = deque()
        # Whole lines as UTF-8 the descriptor has not taken yet: one batch at most, for
        # no more is taken from `waiting` until they are written.
        self.unwritten: deque[bytes] = deque()
        self.dropped = 0
        self.scheduled: asyncio.AbstractEventLoop | None = None  # where a write is due
        self.blocked = False
        self.lock = threading.Lock()  # one writer at a time
        self.fd = _descriptor(stream)
        # A regular file takes any write at once; a pipe, socket or terminal may not.
        self.may_block = self.fd is not None and not stat.S_ISREG(os.fstat(self.fd).st_mode)
        if not self.may_block:
            self.bytes_per_write = 1 << 20
        self.poll = select.poll()  # no FD_SETSIZE limit, unlike select()
        if self.fd is not None:
            self.poll.register(self.fd, select.POLLOUT)

    def format(self, record: logging.LogRecord) -> str:
        """The record's line; a line that says so if that fails: logging must not."""
        try:
            return self.lines.format(record)
        except Exception as error:
            return f"(billfold.kit.logs could not format {record!r}: {error!r})"

    def add(self, line: str | AccessEntry) -> None:
        waiting = self.waiting
        if len(waiting) >= self.max_waiting:
            self.dropped += 1
            return
        waiting.append(line)
        if len(waiting) >= self.lines_per_write and not self.blocked:
            self.write()
        else:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop in this thread: write now
                self.write()
                return
            # Once per batch, on this loop: a loop that closed with a write due (a
            # test's, or a worker's run that ended) leaves the next loop to schedule one.
            if self.scheduled is not loop:
                self.scheduled = loop
                loop.call_later(self.interval_s, self._due)

    def _due(self) -> None:
        self.scheduled = None
        self.write()
        if self.waiting or self.unwritten:  # the stream took not all: try again later
            self.scheduled = loop = asyncio.get_running_loop()
            loop.call_later(self.interval_s, self._due)

    def write(self, timeout_s: float = 0.0) -> bool:
        """Write what waits, as far as the stream takes it without blocking (or within
        `timeout_s`); whether nothing is left waiting."""
        with self.lock:
            deadline = time.monotonic() + timeout_s
            while True:
                if not self.unwritten:
                    out = self._lines()
                    if self.dropped and not self.waiting:
                        dropped, self.dropped = self.dropped, 0
                        out.append(self.format(_dropped(dropped)))
                    if not out:
                        self.blocked = False
                        return True
                    if self.fd is None:
                        self._write_stream(out)
                        continue
                    self.unwritten.extend(_chunks(out, self.bytes_per_write))
                if not self._send(deadline):
                    self.blocked = True
                    return False

    def _lines(self) -> list[str]:
        out: list[str] = []
        waiting, access = self.waiting, self.lines.access
        try:
            while len(out) < self.lines_per_write:
                item = waiting.popleft()
                if isinstance(item, str):
                    out.append(item)
                else:
                    try:
                        out.append(access(item))
                    except Exception as error:
                        out.append(f"(billfold.kit.logs could not format {item!r}: {error!r})")
        except IndexError:
            pass
        return out

    def _write_stream(self, out: list[str]) -> None:
        try:
            self.stream.write("\n".join(out) + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # stderr closed or gone: nothing left to tell it
            pass

    def _send(self, deadline: float) -> bool:
        """Write the chunks not yet written, each once `poll` says the descriptor takes
        more; whether all went by `deadline`."""
        assert self.fd is not None
        unwritten = self.unwritten
        while unwritten:
            try:
                if self.may_block:
                    wait_ms = max(0, int((deadline - time.monotonic()) * 1000))
                    if not self.poll.poll(wait_ms):
                        return False
                chunk = unwritten[0]
                written = os.write(self.fd, chunk)
            except InterruptedError:
                continue
            except (OSError, ValueError):  # the descriptor is gone: nothing left to tell it
                unwritten.clear()
                return True
            if written < len(chunk):
                unwritten[0] = chunk[written:]
            else:
                unwritten.popleft()
        return True


def _chunks(lines: list[str], size: int) -> list[bytes]:
    """`lines` as UTF-8, whole lines to a chunk of at most `size` bytes (a longer line
    is a chunk of its own)."""
    chunks: list[bytes] = []
    current: list[bytes] = []
    length = 0
    for line in lines:
        data = line.encode("utf-8", "backslashreplace") + b"\n"
        if current and length + len(data) > size:
            chunks.append(b"".join(current))
            current, length = [], 0
        current.append(data)
        length += len(data)
    if current:
        chunks.append(b"".join(current))
    return chunks


def _descriptor(stream: IO[str]) -> int | None:
    """The file descriptor under `stream`, after writing what its own buffer holds; None
    for a stream without one (a StringIO)."""
    try:
        fd = stream.fileno()
        stream.flush()
        os.fstat(fd)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None
    return fd


def _dropped(count: int) -> logging.LogRecord:
    record = logging.LogRecord(
        "billfold.logs",
        logging.WARNING,
        __file__,
        0,
        "dropped %d log lines: the log's stream did not keep up",
        (count,),
        None,
    )
    record.msg, record.args = record.getMessage(), None
    record.dropped = count
    record.correlation_id = None
    return record


def access_record(
    method: str,
    path: str,
    status: int,
    duration_ms: float,
    correlation_id: str,
    tenant_id: str | None,
    created: float,
) -> logging.LogRecord:
    duration_ms = float(f"{duration_ms:.3f}")
    record = logging.LogRecord(
        ACCESS_LOGGER,
        logging.INFO,
        __file__,
        0,
        "%s %s %d %.1f ms",
        (method, path, status, duration_ms),
        None,
    )
    record.created = created
    record.msecs = (created - int(created)) * 1000
    record.method = method
    record.path = path
    record.status = status
    record.duration_ms = duration_ms
    record.correlation_id = correlation_id
    record.tenant_id = tenant_id
    return record


class AccessLog:
    """One line per request: method, path, status, duration, correlation id, tenant.

    With `configure()` the entry is left with the sink as a tuple (well under a
    microsecond here) and made a line when it is written; without it (a library user, a
    test that configured nothing) it is an ordinary record of the `billfold.access`
    logger."""

    def __init__(self) -> None:
        self.logger = logging.getLogger(ACCESS_LOGGER)
        self.sink: _Sink | None = None

    def __call__(
        self,
        method: str,
        path: str,
        status: int,
        duration_s: float,
        correlation_id: str,
        tenant_id: str | None,
    ) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        entry = (method, path, status, duration_s * 1000, correlation_id, tenant_id, time.time())
        if self.sink is not None:
            self.sink.add(entry)
        else:
            self.logger.handle(access_record(*entry))


access = AccessLog()
_sink: _Sink | None = None


def formatter(log_format: Format, stream: IO[str]) -> Lines:
    if log_format == "auto":
        log_format = "console" if stream.isatty() else "json"
    return ConsoleLines() if log_format == "console" else JsonLines()


def configure(
    log_format: Format = "auto", level: str = "INFO", stream: IO[str] | None = None
) -> None:
    """Send every log line of this process to `stream` (stderr), as JSON lines or, on a
    terminal (`auto`), lines for people, many to a write. Idempotent: calling it again
    replaces the previous configuration."""
    global _sink
    shutdown()
    stream = stream if stream is not None else sys.stderr
    _sink = _Sink(stream, formatter(log_format, stream))
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_Handler(_sink))
    root.setLevel(level)
    access.sink = _sink
    _write_before_sigterm()


def flush(timeout_s: float = 5.0) -> bool:
    """Write every line logged so far, waiting up to `timeout_s` for a stream that does
    not take them; whether all went."""
    return _sink.write(timeout_s) if _sink is not None else True


def shutdown() -> None:
    """Write what waits (for up to 5 s) and stop logging through the sink (at exit, or to
    reconfigure)."""
    global _sink
    sink, _sink = _sink, None
    if sink is None:
        return
    access.sink = None
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _Handler):
            root.removeHandler(handler)
    sink.write(5.0)


atexit.register(shutdown)


def _write_before_sigterm() -> None:
    """SIGTERM's default action ends the process without running `atexit`, and uvicorn
    raises SIGTERM again once it has shut down: write what is queued first, then let the
    signal end the process as it would have."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminated)


def _terminated(signum: int, _frame: object) -> None:
    shutdown()
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)
