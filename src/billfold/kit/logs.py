"""Log lines: one JSON object a line (lines for people on a terminal), each with the
correlation id of the request it was logged in, and one access line per request.

`configure()` is called once by each serving or worker process (`billfold serve`, the
ASGI module, `billfold worker ...`). Every module keeps logging through the standard
library (`logging.getLogger("billfold.x")`); the root logger's one handler puts records
on a queue (having merged the message's `%s` arguments), and a thread formats the lines
and writes them, so the event loop never waits on stderr.

The correlation id is a context variable the request guard sets (`CORRELATION`): each
request runs in its own task, so every line logged while serving it carries its id. The
access line is the request's cheapest line: the guard hands the listener a tuple, and the
thread makes the record. See docs/decisions/0027 and docs/operating.md#logs.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import signal
import sys
import threading
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from json.encoder import encode_basestring as _string
from queue import Empty, SimpleQueue
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


class _ToQueue(logging.handlers.QueueHandler):
    """Puts records on the queue as they are: the listener runs in this process, so
    nothing is pickled. What must be read now is read now: the correlation id (a context
    variable of this task) and the message (its arguments could change later)."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        if "correlation_id" not in record.__dict__:
            record.correlation_id = CORRELATION.get()
        record.msg = record.getMessage()
        record.args = None
        return record


class _Writer(threading.Thread):
    """Formats and writes what is queued, on its own thread, many lines to a write: at
    10,000 requests a second one write (and flush) a line would be 10,000 system calls."""

    def __init__(self, queue: SimpleQueue[Any], stream: IO[str], lines: Lines) -> None:
        super().__init__(name="billfold-logs", daemon=True)
        self.queue, self.stream, self.lines = queue, stream, lines

    def run(self) -> None:
        while True:
            batch = [self.queue.get()]
            # A few hundred lines at most before the write gives the GIL back: the
            # event loop waits for this thread no longer than about a millisecond.
            while len(batch) < 256:
                try:
                    batch.append(self.queue.get_nowait())
                except Empty:
                    break
            out: list[str] = []
            stop = False
            for item in batch:
                if isinstance(item, tuple | logging.LogRecord):
                    out.append(self._format(item))
                elif item is _STOP:
                    stop = True
            dropped, access.dropped = access.dropped, 0
            if dropped:
                out.append(self._format(_dropped(dropped)))
            if out:
                self._write("\n".join(out) + "\n")
            for item in batch:
                if isinstance(item, threading.Event):  # flush(): what came before is written
                    item.set()
            if stop:
                return

    def _format(self, item: logging.LogRecord | AccessEntry) -> str:
        """The line of a record or an access entry; a line that says so if that fails,
        for this thread must outlive any line."""
        try:
            if isinstance(item, tuple):
                return self.lines.access(item)
            return self.lines.format(item)
        except Exception as error:
            return f"(billfold.kit.logs could not format {item!r}: {error!r})"

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # stderr closed or gone: nothing left to tell it
            pass


_STOP = object()


def _dropped(count: int) -> logging.LogRecord:
    record = logging.LogRecord(
        "billfold.logs",
        logging.WARNING,
        __file__,
        0,
        "dropped %d access lines: the log's stream did not keep up",
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

    With `configure()` the entry goes to the writing thread as a tuple (a fraction of a
    microsecond here); without it (a library user, a test that configured nothing) it is
    an ordinary record of the `billfold.access` logger."""

    def __init__(self) -> None:
        self.logger = logging.getLogger(ACCESS_LOGGER)
        self.queue: SimpleQueue[Any] | None = None
        # Past this many lines waiting (stderr blocked: a full pipe, a stalled reader),
        # access lines are counted and dropped, not kept: memory stays bounded.
        self.max_queued = 100_000
        self.dropped = 0

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
        if self.queue is not None:
            if self.queue.qsize() < self.max_queued:
                self.queue.put(entry)
            else:
                self.dropped += 1
        else:
            self.logger.handle(access_record(*entry))


access = AccessLog()
_writer: _Writer | None = None
_queue: SimpleQueue[Any] | None = None


def formatter(log_format: Format, stream: IO[str]) -> Lines:
    if log_format == "auto":
        log_format = "console" if stream.isatty() else "json"
    return ConsoleLines() if log_format == "console" else JsonLines()


def configure(
    log_format: Format = "auto", level: str = "INFO", stream: IO[str] | None = None
) -> None:
    """Send every log line of this process to `stream` (stderr) through a writing
    thread, as JSON lines or, on a terminal (`auto`), lines for people. Idempotent:
    calling it again replaces the previous configuration."""
    global _writer, _queue
    shutdown()
    stream = stream if stream is not None else sys.stderr
    _queue = SimpleQueue()
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_ToQueue(_queue))
    root.setLevel(level)
    _writer = _Writer(_queue, stream, formatter(log_format, stream))
    _writer.start()
    access.queue = _queue
    _write_before_sigterm()


def flush(timeout_s: float = 5.0) -> None:
    """Wait until every line logged so far is written."""
    if _queue is None:
        return
    done = threading.Event()
    _queue.put(done)
    done.wait(timeout_s)


def shutdown() -> None:
    """Write what is queued and stop the writing thread (at exit, or to reconfigure)."""
    global _writer, _queue
    access.queue = None
    if _writer is not None and _queue is not None:
        _queue.put(_STOP)
        _writer.join(timeout=5)
        _writer = None
    if _queue is not None:
        root = logging.getLogger()
        for handler in list(root.handlers):
            if isinstance(handler, _ToQueue):
                root.removeHandler(handler)
        _queue = None


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
