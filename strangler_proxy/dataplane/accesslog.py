"""Structured access logs: one JSON line per request on logger ``strangler.access``.

The line is built with orjson (a few hundred nanoseconds) and only when the
logger is enabled for INFO, so a proxy with access logs routed nowhere pays
almost nothing. Where the lines go is the application's logging config; for a
busy proxy :class:`BufferedLineHandler` writes them to a file through a
buffer flushed every ``flush_interval_s`` instead of one syscall per line.
The target is written with the values of secret query parameters replaced
(:class:`~strangler_proxy.diff.redaction.QueryRedaction`).

    >>> import io, logging
    >>> buf = io.StringIO(); h = logging.StreamHandler(buf)
    >>> log = logging.getLogger(ACCESS_LOGGER); log.addHandler(h); log.setLevel(logging.INFO)
    >>> AccessLog().emit("r", "shadow", "legacy", "GET", "/a?b&token=s3cret", 200, 0.0012)
    >>> buf.getvalue().startswith('{"route":"r","mode":"shadow","upstream":"legacy"')
    True
    >>> '"target":"/a?b&token=REDACTED"' in buf.getvalue()
    True
    >>> log.removeHandler(h)
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import IO

import orjson

from strangler_proxy.diff.redaction import QueryRedaction

ACCESS_LOGGER = "strangler.access"
DEFAULT_FLUSH_INTERVAL_S = 0.5


class AccessLog:
    """Emits the access line of one finished request."""

    __slots__ = ("_logger", "enabled", "query")

    def __init__(self, enabled: bool = True, query: QueryRedaction | None = None) -> None:
        self._logger = logging.getLogger(ACCESS_LOGGER)
        self.enabled = enabled
        # Replaced whole on reload (one assignment), like the route table.
        self.query = query or QueryRedaction()

    def emit(
        self,
        route: str | None,
        mode: str,
        upstream: str,
        method: str,
        target: str,
        status: int,
        duration_s: float,
        fallback: bool = False,
        error: str | None = None,
        cell: str | None = None,
    ) -> None:
        logger = self._logger
        if not self.enabled or not logger.isEnabledFor(logging.INFO):
            return
        handlers = logger.handlers
        line: dict[str, object] = {
            "route": route,
            "mode": mode,
            "upstream": upstream,
            "method": method,
            "target": self.query.target(target),
            "status": status,
            # whole microseconds, as milliseconds (round(x, 3) costs a decimal conversion)
            "duration_ms": int(duration_s * 1_000_000.0 + 0.5) / 1000,
        }
        if cell is not None:
            line["cell"] = cell
        if fallback:
            line["fallback"] = True
        if error is not None:
            line["error"] = error
        data = orjson.dumps(line)
        # Fast path: when the only sink is a BufferedLineHandler, skip building a
        # LogRecord (the costliest part of logging) and append the bytes directly.
        if len(handlers) == 1 and not logger.propagate and type(handlers[0]) is BufferedLineHandler:
            handlers[0].write_line(data)
        else:
            logger.info(data.decode())


class BufferedLineHandler(logging.Handler):
    """Writes each record's message as a line into a buffer that a background
    thread flushes every ``flush_interval_s``: no formatter, no syscall per line.

    The buffer is a deque (append/popleft are atomic), so the event loop never
    waits on a lock held by the flusher.
    """

    def __init__(self, stream: IO[bytes], flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S) -> None:
        super().__init__(logging.INFO)
        self._stream = stream
        self._buf: deque[bytes] = deque()
        self._interval = flush_interval_s
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._run, name="access-log-flush", daemon=True)
        self._flusher.start()

    def emit(self, record: logging.LogRecord) -> None:
        self._buf.append(record.getMessage().encode())

    def write_line(self, line: bytes) -> None:
        """Append one line (without its newline)."""
        self._buf.append(line)

    def flush(self) -> None:
        lines: list[bytes] = []
        buf = self._buf
        while buf:
            try:
                lines.append(buf.popleft())
            except IndexError:
                break
        if lines:
            lines.append(b"")
            with self.lock:  # type: ignore[union-attr]
                try:
                    self._stream.write(b"\n".join(lines))
                    self._stream.flush()
                except (OSError, ValueError):  # a full disk must never stop the proxy
                    pass

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self.flush()
        super().close()


def write_access_log_to(path: str, flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S) -> BufferedLineHandler:
    """Route ``strangler.access`` to a file (append); returns the handler to close."""
    handler = BufferedLineHandler(open(path, "ab"), flush_interval_s)  # noqa: SIM115 - closed with the handler
    logger = logging.getLogger(ACCESS_LOGGER)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return handler

