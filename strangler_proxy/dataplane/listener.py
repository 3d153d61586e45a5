"""The proxy's listening socket and its client connections: an asyncio
protocol on httptools' request parser (llhttp), the limits of
:class:`~strangler_proxy.config.ProxyLimits`, and the proxy's own answers.
The request handler (handler.py) runs behind it, one request at a time per
connection, answering pipelined requests in order.

No framework objects per request: a :class:`Request` holds the raw request
line and header bytes as received, the body as a stream, and the calls that
write the answer (:meth:`Request.start`, :meth:`Request.write`,
:meth:`Request.end`, :meth:`Request.send`).

Limits and HTTP/1.1 rules of every connection (a :class:`ClientConnection`):

* a complete request head must arrive within ``header_timeout_s`` (from the
  connection's start, or from the first byte of the next request on a kept-alive
  connection): else ``408`` and close, or a silent close when nothing came;
* an idle kept-alive connection is closed after ``keepalive_timeout_s``;
* at most ``max_connections`` are open: at the cap a new connection takes the
  place of the longest idle kept-alive one (answered, no byte of a next
  request yet), which is closed; when none is idle it is answered ``503`` with
  ``Connection: close`` and closed;
* a request-target over ``max_line_size`` is a ``414``, a header field over
  ``max_field_size`` or more than ``max_headers`` fields a ``431``;
* a head the parser refuses -- among them the request smuggling shapes: both
  ``Content-Length`` and ``Transfer-Encoding``, duplicate ``Content-Length``,
  a bad chunk size, a ``Transfer-Encoding`` that does not end in ``chunked`` --
  or an HTTP/1.1 request without ``Host`` is a ``400``, and the connection closes;
* ``Upgrade`` (WebSocket, h2c) is declined: the request is answered as a plain
  HTTP request (``Upgrade`` is hop-by-hop and not forwarded) and the connection
  closes after it; ``CONNECT``, and an ``Upgrade`` request with a body, are a ``400``;
* a request body is streamed: the socket is paused while more than
  :data:`BODY_HIGH` bytes wait for the upstream;
* a response body is streamed: the upstream is paused while the client's
  socket buffer is full (:attr:`Request.feeder`);
* the proxy's own answers are fixed short texts (nothing of the client's input)
  with ``Server: <server_header>`` or none; an upstream's answer keeps its own
  ``Server``.

    runner, port = await start_listener(handler, "127.0.0.1", 0, ProxyLimits(header_timeout_s=5))
    ...
    await runner.cleanup()      # stops listening, then closes the handler's upstream pools
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from email.utils import formatdate
from http import HTTPStatus
from typing import Protocol

import httptools

from strangler_proxy.config import ProxyLimits

log = logging.getLogger(__name__)

# The proxy's own pages: the reason phrase (RFC 9110's; Python 3.11's
# HTTPStatus still says "Request-URI Too Long") and a fixed text that never
# carries any of the client's bytes.
_PAGES: dict[int, tuple[str, str]] = {
    400: ("Bad Request", "the request could not be parsed"),
    408: ("Request Timeout", "the request head did not arrive in time"),
    414: ("URI Too Long", "the request line is longer than the proxy accepts"),
    431: ("Request Header Fields Too Large", "a header field is longer, or there are more fields, than the proxy "
                                             "accepts"),
    500: ("Internal Server Error", "the proxy failed to handle the request"),
    503: ("Service Unavailable", "the proxy has too many open connections; retry shortly"),
    504: ("Gateway Timeout", "the proxy timed out handling the request"),
}
# A refused connection is read (and the input dropped) this long at most before
# it is closed: closing with unread input resets the connection, and the client
# could lose the 503 it has not read yet.
REFUSAL_LINGER_S = 1.0
REFUSAL_LOG_EVERY_S = 10.0  # at most one warning this often while refusing
# A request body: pause the client's socket while this much waits for the upstream.
BODY_HIGH = 256 * 1024
# Pipelined requests parsed ahead of the one being answered: pause reading beyond this.
MAX_PIPELINED = 16

Headers = list[tuple[str, str]]
RawHeaders = list[tuple[bytes, bytes]]


def _page(status: int) -> tuple[str, bytes]:
    """The reason phrase and fixed body of the proxy's own answer with ``status``.

    >>> _page(414)
    ('URI Too Long', b'414 URI Too Long: the request line is longer than the proxy accepts.\\n')
    >>> _page(502)
    ('Bad Gateway', b'502 Bad Gateway.\\n')
    """
    reason, text = _PAGES.get(status) or (HTTPStatus(status).phrase, "")
    return reason, (f"{status} {reason}: {text}.\n" if text else f"{status} {reason}.\n").encode()


class _Date:
    """The ``Date`` header's value, formatted once a second."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = 0
        self._value = b""

    def now(self) -> bytes:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._value = formatdate(second, usegmt=True).encode()
        return self._value


DATE = _Date()


class _RawPage:
    """A whole answer of the proxy's own, written straight to the transport."""

    __slots__ = ("_head", "_tail")

    def __init__(self, status: int, server: str | None, extra: str = "") -> None:
        reason, body = _page(status)
        self._head = f"HTTP/1.1 {status} {reason}\r\nDate: ".encode()
        tail = (f"\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
                f"Connection: close\r\n{extra}")
        if server is not None:
            tail += f"Server: {server}\r\n"
        self._tail = tail.encode("ascii") + b"\r\n" + body

    def render(self) -> bytes:
        return self._head + DATE.now() + self._tail


class HeaderView:
    """Case-insensitive first-value lookup over raw request headers (what the
    routing functions read: ``headers.get(name)``). A lookup scans the few raw
    headers; nothing is built per request."""

    __slots__ = ("_raw",)

    def __init__(self, raw: RawHeaders) -> None:
        self._raw = raw

    def get(self, name: str, default: str | None = None) -> str | None:
        lk = name.lower().encode("latin-1")
        for k, v in self._raw:
            if len(k) == len(lk) and k.lower() == lk:
                return v.decode("utf-8", "surrogateescape")
        return default

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def getall(self, name: str) -> list[str]:
        lk = name.lower().encode("latin-1")
        return [v.decode("utf-8", "surrogateescape") for k, v in self._raw if k.lower() == lk]

    def items(self) -> list[tuple[str, str]]:
        return [(k.decode("latin-1"), v.decode("utf-8", "surrogateescape")) for k, v in self._raw]

    def __iter__(self) -> Iterator[str]:
        return iter([k for k, _ in self.items()])

    def __len__(self) -> int:
        return len(self._raw)


class RequestBody:
    """A request body as it arrives: iterate it once (``async for chunk in body``)."""

    __slots__ = ("_conn", "_chunks", "_size", "complete", "_waiter", "_error", "discard", "received")

    def __init__(self, conn: ClientConnection) -> None:
        self._conn = conn
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self.complete = False
        self.received = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self.discard = False  # nobody will read it: drop what comes

    def feed(self, data: bytes) -> None:
        self.received += len(data)
        if self.discard:
            return
        self._chunks.append(data)
        self._size += len(data)
        if self._size > BODY_HIGH:
            self._conn.pause_body()
        self._wake()

    def finish(self, error: BaseException | None = None) -> None:
        self.complete = True
        self._error = error
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def whole(self) -> bytes:
        """Everything received (call when ``complete``; the body stays readable)."""
        if len(self._chunks) == 1:
            return self._chunks[0]
        data = b"".join(self._chunks)
        self._chunks = deque((data,))
        return data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._size -= len(chunk)
                if self._size <= BODY_HIGH // 2:
                    self._conn.resume_body()
                yield chunk
                continue
            if self.complete:
                if self._error is not None:
                    raise self._error
                return
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None


class BodyFeeder(Protocol):
    """What streams a response body in (an upstream response): paused when the client is slow."""

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def close(self) -> None: ...


class Request:
    """One client request and the calls that write its answer."""

    __slots__ = ("conn", "method", "raw_path", "version", "raw_headers", "_headers", "remote", "body",
                 "content_length", "chunked", "keep_alive", "expect_continue", "upgrade", "started", "finished",
                 "status", "_chunked_out", "_bodiless", "feeder", "_continued", "_head", "connection")

    def __init__(self, conn: ClientConnection, method: str, raw_path: str, version: str, raw_headers: RawHeaders,
                 keep_alive: bool) -> None:
        self.conn = conn
        self.method = method
        self.raw_path = raw_path  # the request-target, byte-for-byte (latin-1)
        self.version = version  # "1.1" or "1.0"
        self.raw_headers = raw_headers
        self._headers: HeaderView | None = None
        self.remote = conn.remote
        self.body: RequestBody | None = None
        self.content_length: int | None = None
        self.chunked = False
        self.keep_alive = keep_alive
        self.expect_continue = False
        self.upgrade = False
        self.started = False
        self.finished = False
        self.status = 0
        self._chunked_out = False
        self._bodiless = False
        self.feeder: BodyFeeder | None = None
        self._continued = False
        self._head: bytes | None = None  # the response head, until it goes out with the first body bytes
        self.connection: bytes | None = None  # the Connection field's tokens (several fields: joined)

    @property
    def headers(self) -> HeaderView:
        h = self._headers
        if h is None:
            h = self._headers = HeaderView(self.raw_headers)
        return h

    @property
    def body_exists(self) -> bool:
        return self.body is not None

    @property
    def disconnected(self) -> bool:
        return self.conn.closed

    def header_value(self, name: bytes) -> bytes | None:
        """The first raw value of header ``name`` (lower-case bytes), or None."""
        for k, v in self.raw_headers:
            if k.lower() == name:
                return v
        return None

    def continue_body(self) -> None:
        """Answer ``Expect: 100-continue`` (once) before the body is read."""
        if self.expect_continue and not self._continued and not self.started:
            self._continued = True
            self.conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    # ---------------------------------------------------------------- the answer
    def start(self, status: int, reason: bytes, headers: Headers, *, length: int | None, own: bool = False,
              close: bool = False, fields: RawHeaders = ()) -> None:
        """Begin the answer with its head. ``headers`` are end-to-end (no framing, no
        ``Connection``); ``length`` is the body's when known (the headers carry
        its ``Content-Length`` then), else the body is chunked (HTTP/1.1) or
        ends with the connection (HTTP/1.0). ``own``: the proxy's answer, which
        gets the configured ``Server``. ``fields``: end-to-end header fields as an
        upstream sent them (bytes), written first and as they are.

        The head is held until the first body bytes, :meth:`end` or :meth:`flush`, and
        goes out in the same write as them: one send to the client for a whole small answer."""
        self.started = True
        self.status = status
        bodiless = self._bodiless = self.method == "HEAD" or status in (204, 304) or status < 200
        if close or self.upgrade or (self.body is not None and not self.body.complete):
            self.keep_alive = False  # an unread request body cannot be skipped safely
        parts = [b"HTTP/1.1 %d %b\r\n" % (status, reason)]
        has_date = False
        for kb, vb in fields:
            if not has_date and len(kb) == 4 and kb.lower() == b"date":
                has_date = True
            parts += (kb, b": ", vb, b"\r\n")
        for k, v in headers:
            if not has_date and len(k) == 4 and k.lower() == "date":
                has_date = True
            parts.append(f"{k}: {v}\r\n".encode("utf-8", "surrogateescape"))
        if not has_date:
            parts.append(b"Date: " + DATE.now() + b"\r\n")
        if own:
            server = self.conn.server.limits.server_header
            if server is not None:
                parts.append(f"Server: {server}\r\n".encode("latin-1"))
        if not bodiless and length is None:
            if self.version == "1.1":
                self._chunked_out = True
                parts.append(b"Transfer-Encoding: chunked\r\n")
            else:
                self.keep_alive = False
        if not self.keep_alive:
            if self.version == "1.1":
                parts.append(b"Connection: close\r\n")
        elif self.version == "1.0":
            parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"\r\n")
        self.conn.feeding = self
        self._head = b"".join(parts)

    def flush(self) -> None:
        """Send the head now if it is still held (the body is not there yet)."""
        head = self._head
        if head is not None:
            self._head = None
            self.conn.write(head)

    def write(self, data: bytes) -> None:
        """A piece of the body (framed when chunked); dropped for bodiless answers."""
        if self._bodiless or not data:
            return
        if self._chunked_out:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        head = self._head
        if head is not None:
            self._head = None
            data = head + data
        self.conn.write(data)

    def end(self) -> None:
        """The answer is complete: the next pipelined request may be answered."""
        if self.finished:
            return
        tail = b"0\r\n\r\n" if self._chunked_out else b""
        head = self._head
        if head is not None:
            self._head = None
            tail = head + tail
        if tail:
            self.conn.write(tail)
        self.finished = True
        self.conn.response_done(self)

    def send(self, status: int, reason: bytes, headers: Headers, body: bytes, *, own: bool = False,
             close: bool = False) -> None:
        """A whole answer in one write (``headers`` without Content-Length: it is added)."""
        length = len(body)
        if not (self.method == "HEAD" or status in (204, 304)):
            headers = [*headers, ("Content-Length", str(length))]
        self.start(status, reason, headers, length=length, own=own, close=close)
        self.write(body)
        self.end()

    def send_page(self, status: int) -> None:
        """The proxy's own error page; the connection closes after it."""
        reason, body = _page(status)
        self.send(status, reason.encode(), [("Content-Type", "text/plain; charset=utf-8")], body, own=True,
                  close=True)

    def abort(self) -> None:
        """The answer cannot be completed (the upstream broke mid-body): cut the connection
        (after the head, when it began: the client sees a truncated message)."""
        self.flush()
        self.finished = True
        self.keep_alive = False
        self.conn.close()

    async def drain(self) -> None:
        self.flush()
        await self.conn.drain()


class Handler(Protocol):
    """What the listener runs for each request (``ProxyHandler``), and how its pools close."""

    def __call__(self, request: Request) -> Awaitable[None]: ...

    async def close(self) -> None: ...


class _Refusal(Exception):
    """Raised from a parser callback: answer ``status`` and close."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


_IDLE, _HEAD, _BUSY = 0, 1, 2  # what the connection's deadline is for: idle keep-alive, a head, nothing


class ClientConnection(asyncio.Protocol):
    """One client connection (see the module docstring)."""

    __slots__ = ("server", "transport", "parser", "remote", "closed", "_url", "_headers",
                 "_in_head", "_parsing", "_queue", "_current", "_task", "_deadline", "_deadline_kind", "_timer",
                 "_counted", "_refused", "_linger", "_paused_by", "_drain", "feeding", "_write_paused", "_idle",
                 "_loop", "_next")

    def __init__(self, server: ProxyListener) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.remote: str | None = None
        self.closed = False
        self._url = b""
        self._headers: RawHeaders = []
        self._idle = False  # answered, waiting for a next request (in server.idle)
        self._in_head = False  # a head has begun and not completed
        self._parsing: Request | None = None  # the request whose body the parser is reading
        self._queue: deque[Request] = deque()  # parsed, waiting for the one in hand
        self._current: Request | None = None  # the request being answered
        self._task: asyncio.Task[None] | None = None
        self._deadline = 0.0
        self._deadline_kind = _BUSY
        self._timer: asyncio.TimerHandle | None = None
        self._counted = False
        self._refused = False
        self._linger: asyncio.TimerHandle | None = None
        self._paused_by: set[str] = set()  # why reading is paused: "body", "pipeline"
        self._drain: asyncio.Future[None] | None = None
        self._write_paused = False
        self.feeding: Request | None = None  # the request whose answer is being written
        self._loop = asyncio.get_running_loop()
        # The connection's worker (_task) waits on this for a next request (see _work).
        self._next: asyncio.Future[None] | None = None

    # ---------------------------------------------------------------- open / close
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        server = self.server
        if server.open_connections >= server.limits.max_connections and not server.evict_idle():
            self._refuse()
            return
        server.open_connections += 1
        server.connections.add(self)
        self._counted = True
        peer = transport.get_extra_info("peername")
        self.remote = peer[0] if isinstance(peer, tuple) else None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        # The first head is due header_timeout_s after the connection opens.
        self._set_deadline(_HEAD, server.limits.header_timeout_s)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        if self._refused:
            self.server.refused.discard(self)
            if self._linger is not None:
                self._linger.cancel()
            return
        if self._counted:
            self._counted = False
            self.server.open_connections -= 1
            self.server.connections.discard(self)
        if self._idle:
            self._idle = False
            self.server.idle.pop(self, None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        parsing = self._parsing
        if parsing is not None and parsing.body is not None and not parsing.body.complete:
            parsing.body.finish(ConnectionResetError("the client closed the connection"))
        current = self._current
        if current is not None and not current.finished:
            feeder = current.feeder
            if feeder is not None:
                feeder.close()  # the answer is streaming: drop the upstream; the handler sees the disconnect
            elif not current.started:
                task = self._task
                if task is not None and not task.done():
                    task.cancel()  # the client went away before its answer began: the exchange is dropped
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_exception(ConnectionResetError("the client closed the connection"))
        self._queue.clear()
        self._wake_worker()  # waiting for a next request that will not come: it ends

    def _refuse(self) -> None:
        """Answer 503 without parsing anything, then close (never counted)."""
        server = self.server
        transport = self.transport
        assert transport is not None
        self._refused = True
        server.refused.add(self)
        server.note_refusal()
        transport.write(server.refusal_page.render())
        if transport.can_write_eof():
            transport.write_eof()
        self._linger = asyncio.get_running_loop().call_later(REFUSAL_LINGER_S, transport.close)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    # ---------------------------------------------------------------- writing
    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def pause_writing(self) -> None:
        self._write_paused = True
        req = self.feeding
        if req is not None and req.feeder is not None:
            req.feeder.pause()

    def resume_writing(self) -> None:
        self._write_paused = False
        req = self.feeding
        if req is not None and req.feeder is not None:
            req.feeder.resume()
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    async def drain(self) -> None:
        if self.closed:
            raise ConnectionResetError("the client closed the connection")
        if self._write_paused:
            if self._drain is None:
                self._drain = self._loop.create_future()
            await self._drain

    # ---------------------------------------------------------------- reading
    def _pause(self, why: str) -> None:
        if not self._paused_by and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self._paused_by.add(why)

    def _resume(self, why: str) -> None:
        if why in self._paused_by:
            self._paused_by.discard(why)
            if not self._paused_by and self.transport is not None and not self.closed:
                self.transport.resume_reading()

    def pause_body(self) -> None:
        self._pause("body")

    def resume_body(self) -> None:
        self._resume("body")

    def data_received(self, data: bytes) -> None:
        if self._refused or self.closed:
            return  # read and dropped while the refusal lingers
        if self._idle:
            self._idle = False
            self.server.idle.pop(self, None)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__ or exc.__cause__
            self._bad(cause.status if isinstance(cause, _Refusal) else 400, exc)
            return
        except httptools.HttpParserUpgrade:
            self._upgrade_rest()
            return
        except httptools.HttpParserError as exc:
            self._bad(400, exc)
            return
        if self._in_head and self._deadline_kind != _HEAD:
            # The first bytes of a head on a kept-alive connection: from now it has header_timeout_s.
            self._set_deadline(_HEAD, self.server.limits.header_timeout_s)

    def _upgrade_rest(self) -> None:
        """The parser stopped after an Upgrade request's head (one without a body,
        see on_headers_complete): it is answered as a plain request, then the
        connection closes; nothing after it is read."""
        self._pause("upgrade")

    def _bad(self, status: int, exc: BaseException | None) -> None:
        """A head or body the proxy refuses: its own page (when no answer has started), then close."""
        log.debug("%d to %s: %r", status, self.remote, exc)
        if self._parsing is not None and self._parsing.body is not None:
            self._parsing.body.finish(ConnectionResetError("the request body is malformed"))
        current = self._current
        if current is not None and current.started:
            # An answer is being written: it cannot be followed by a page. Finish it, then close.
            current.keep_alive = False
            self._queue.clear()
            self._pause("bad")
            return
        if current is not None and self._task is not None and not self._task.done():
            self._task.cancel()
        self._queue.clear()
        self._current = None
        server = self.server
        page = _RawPage(status, server.limits.server_header)
        self.write(page.render())
        self.close()

    # ---------------------------------------------------------------- httptools callbacks
    def on_message_begin(self) -> None:
        self._in_head = True
        self._url = b""
        self._headers = []

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.server.limits.max_line_size:
            raise _Refusal(414)

    def on_header(self, name: bytes, value: bytes) -> None:
        limits = self.server.limits
        if len(name) + len(value) > limits.max_field_size:
            raise _Refusal(431)
        self._headers.append((name, value))
        if len(self._headers) > limits.max_headers:
            raise _Refusal(431)

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self.parser
        version = parser.get_http_version()
        method = parser.get_method().decode("ascii")
        req = Request(self, method, self._url.decode("latin-1"), version, self._headers, parser.should_keep_alive())
        has_host = False
        for k, v in self._headers:
            lk = k.lower()
            if lk == b"host":
                has_host = True
            elif lk == b"content-length":
                req.content_length = int(v)
            elif lk == b"transfer-encoding":
                req.chunked = True
            elif lk == b"connection":
                req.connection = v if req.connection is None else req.connection + b"," + v
            elif lk == b"expect" and v.lower() == b"100-continue" and version == "1.1":
                req.expect_continue = True
        if version == "1.1" and not has_host:
            raise _Refusal(400)
        if method == "CONNECT":
            raise _Refusal(400)
        if parser.should_upgrade():
            if req.chunked or req.content_length:
                raise _Refusal(400)  # the parser stops at the head: a body after it would go unframed
            req.upgrade = True
        if req.chunked or (req.content_length or 0) > 0:
            req.body = RequestBody(self)
        self._parsing = req
        if self._current is None:
            self._dispatch(req)
        else:
            self._queue.append(req)
            if len(self._queue) >= MAX_PIPELINED:
                self._pause("pipeline")

    def on_body(self, body: bytes) -> None:
        req = self._parsing
        if req is not None and req.body is not None:
            req.body.feed(body)

    def on_message_complete(self) -> None:
        req = self._parsing
        self._parsing = None
        if req is not None and req.body is not None:
            req.body.finish()

    # ---------------------------------------------------------------- answering, in order
    def _dispatch(self, req: Request) -> None:
        """``req`` is the one to answer now: the connection's worker takes it (started
        with the first request; one task per connection, not one per request)."""
        self._current = req
        self._deadline_kind = _BUSY
        if self._task is None:
            self._task = self._loop.create_task(self._work())
        else:
            self._wake_worker()

    def _wake_worker(self) -> None:
        waiting, self._next = self._next, None
        if waiting is not None and not waiting.done():
            waiting.set_result(None)

    async def _work(self) -> None:
        """Answer this connection's requests in order, one at a time, until it closes. The
        handler's answer ends with :meth:`response_done`, which makes the next request current."""
        handler = self.server.handler
        while not self.closed:
            req = self._current
            if req is None:  # answered: wait for the next request (or the close)
                self._next = self._loop.create_future()
                await self._next
                continue
            try:
                await handler(req)
            except asyncio.CancelledError:
                if not self.closed:
                    raise
                return
            except Exception:
                log.exception("error handling %s %s from %s", req.method, req.raw_path, self.remote)
                if not req.started and not self.closed:
                    req.send_page(500)
                else:
                    req.abort()
                continue
            if not req.finished:
                if not req.started:
                    req.send_page(500)
                else:
                    req.abort()

    def response_done(self, req: Request) -> None:
        """``req``'s answer is written: close, or go on with the next request."""
        if req is not self._current:
            return
        self.feeding = None
        self._current = None
        if not req.keep_alive or self.closed:
            self.close()
            return
        if req.body is not None and not req.body.complete:
            req.body.discard = True  # pragma: no cover -- start() closes such connections
        if self._queue:
            self._resume("pipeline")
            self._current = self._queue.popleft()  # the worker goes on with it
            self._deadline_kind = _BUSY
            return
        if self._in_head:
            self._set_deadline(_HEAD, self.server.limits.header_timeout_s)
        else:
            self._set_deadline(_IDLE, self.server.limits.keepalive_timeout_s)
            self._idle = True
            self.server.idle[self] = None

    # ---------------------------------------------------------------- one timer: head deadline or idle keep-alive
    def _set_deadline(self, kind: int, after_s: float) -> None:
        loop = self._loop
        self._deadline_kind = kind
        self._deadline = loop.time() + after_s
        if self._timer is None:
            self._timer = loop.call_at(self._deadline, self._expired)
        elif self._timer.when() > self._deadline:
            self._timer.cancel()
            self._timer = loop.call_at(self._deadline, self._expired)

    def _expired(self) -> None:
        self._timer = None
        kind = self._deadline_kind
        if kind == _BUSY or self.closed:
            return
        loop = self._loop
        if loop.time() < self._deadline:
            self._timer = loop.call_at(self._deadline, self._expired)
            return
        if kind == _IDLE and self._in_head:  # bytes came since: the head deadline governs (data_received)
            return
        if kind == _HEAD:
            server = self.server
            server.head_timeouts += 1
            if self._in_head:  # part of a head came: say why the connection ends
                self.write(server.timeout_page.render())
                log.debug("408 to %s: no complete request head within %gs", self.remote,
                          server.limits.header_timeout_s)
        self.close()


class ProxyListener:
    """The proxy's listening state: the handler, the limits and what they did.

    ``open_connections``, ``head_timeouts`` and ``refused_total`` count what
    the limits did (for logs, tests and metrics).
    """

    def __init__(self, handler: Handler, limits: ProxyLimits) -> None:
        self.handler = handler
        self.limits = limits
        self.open_connections = 0
        self.head_timeouts = 0
        self.refused_total = 0
        self.connections: set[ClientConnection] = set()
        # Kept-alive connections waiting for a next request, longest idle first.
        self.idle: dict[ClientConnection, None] = {}
        self.idle_evicted = 0
        self.refused: set[ClientConnection] = set()  # refused connections still lingering
        self.timeout_page = _RawPage(408, limits.server_header)
        self.refusal_page = _RawPage(503, limits.server_header, "Retry-After: 1\r\n")
        self._next_refusal_log = 0.0

    def __call__(self) -> ClientConnection:
        """The protocol factory the listening socket calls for each connection."""
        return ClientConnection(self)

    def evict_idle(self) -> bool:
        """Close the longest idle kept-alive connection to make room; False when none is idle."""
        for conn in self.idle:
            del self.idle[conn]
            conn._idle = False
            conn.close()
            self.open_connections -= 1  # its slot is the new connection's from now
            conn._counted = False
            self.connections.discard(conn)
            self.idle_evicted += 1
            return True
        return False

    def note_refusal(self) -> None:
        self.refused_total += 1
        now = time.monotonic()
        if now >= self._next_refusal_log:
            self._next_refusal_log = now + REFUSAL_LOG_EVERY_S
            log.warning("refusing client connections: %d open, proxy.limits.max_connections is %d "
                        "(%d refused so far)", self.open_connections, self.limits.max_connections,
                        self.refused_total)


def check_open_files(limits: ProxyLimits, upstream_connections: int) -> None:
    """Warn when the process may open fewer files than the limits need: then the
    OS refuses connections (unanswered) before ``max_connections`` is reached."""
    try:
        import resource
    except ImportError:  # not on POSIX: nothing to ask
        return
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = limits.max_connections + upstream_connections + 64  # + listeners, databases, logs
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning("the process may open %d files (ulimit -n) but proxy.limits.max_connections (%d) and the "
                    "upstream pools (%d) need about %d: raise the limit or lower max_connections",
                    soft, limits.max_connections, upstream_connections, wanted)


class ProxyRunner:
    """The running listener: ``cleanup()`` stops listening, closes the client
    connections, then the handler's upstream pools (and what ``on_cleanup`` holds)."""

    def __init__(self, server: ProxyListener, sockets: asyncio.base_events.Server) -> None:
        self.proxy_server = server
        self._server = sockets
        self.on_cleanup: list[Callable[[], Awaitable[None]]] = []

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [s.getsockname()[:2] for s in self._server.sockets]

    async def cleanup(self) -> None:
        self._server.close()
        for conn in list(self.proxy_server.connections) + list(self.proxy_server.refused):
            if conn.transport is not None:
                conn.transport.close()
        await self.proxy_server.handler.close()
        for cleanup in self.on_cleanup:
            await cleanup()
        await asyncio.sleep(0)


async def start_listener(
    handler: Handler, host: str, port: int, limits: ProxyLimits, *, upstream_connections: int = 0,
    reuse_port: bool = False,
) -> tuple[ProxyRunner, int]:
    """Listen on host:port (0 = any free port) with ``limits``; returns the runner and the bound port.
    ``reuse_port``: SO_REUSEPORT, so that several worker processes share the port."""
    check_open_files(limits, upstream_connections)
    server = ProxyListener(handler, limits)
    loop = asyncio.get_running_loop()
    sockets = await loop.create_server(server, host, port, reuse_port=reuse_port or None, backlog=1024)
    runner = ProxyRunner(server, sockets)
    bound = runner.addresses[0][1] if runner.addresses else port
    return runner, int(bound)
