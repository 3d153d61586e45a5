"""The served path's upstream connections: asyncio protocols with httptools'
response parser, pooled per endpoint, no framework objects per request.

:class:`LeanEndpointClient` has the interface of
:class:`~strangler_proxy.dataplane.forwarder.EndpointClient` (``send``,
``close``), so :class:`~strangler_proxy.dataplane.pool.UpstreamPool` balances,
retries and ejects over either; the served path uses this one, the shadow path
and the GraphQL gateway keep aiohttp's.

    client = LeanEndpointClient("legacy", "http://127.0.0.1:8001", config)
    resp = await client.send("GET", "/api/titles/tt1", "", headers, None)   # the head has arrived
    await resp.pipe(sink)          # the body, chunk by chunk, into sink.write()
    await client.close()

* A request head is written in one ``write``: the request line, ``Host`` (the
  endpoint's authority unless the caller passes one) and the caller's headers
  as given; a body is bytes (same write) or an async iterator of chunks (sent
  chunked unless the headers carry a ``Content-Length``), written with the
  connection's flow control.
* The response head is parsed by ``httptools.HttpResponseParser``; the body is
  buffered until a consumer is attached (:meth:`LeanResponse.pipe`), then
  delivered as it arrives. A consumer that
  cannot keep up pauses the upstream socket (:meth:`LeanResponse.pause`).
* At most ``max_connections`` connections per endpoint; a caller over it waits.
  A connection whose response ended with keep-alive goes back to the idle
  list; one that broke, was not read to the end or said ``close`` is closed.
* Idle connections belong to the address, not to the upstream's name: the
  clients of one :class:`KeepAlive` that reach the same ``scheme://host:port``
  (the cells' copies of an upstream that share a backend, two upstreams naming
  one service) take from and return to one idle list, so a request spread
  over many names finds a warm connection. A connection taken counts against
  the taker's ``max_connections`` from then on (and no longer against its
  previous user's); the read timeout and ``Host`` are the taker's.
* Errors are the ones :mod:`~strangler_proxy.dataplane.forwarder` knows:
  :class:`ConnectFailed` (never sent), :class:`UpstreamClosed` (the connection
  broke before or while answering), ``TimeoutError``; ``translate`` turns them
  into the proxy's typed errors.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import httptools
from yarl import URL

from strangler_proxy.config import UpstreamConfig
from strangler_proxy.routing.methods import SAFE_METHODS

Headers = list[tuple[str, str]]
RawHeaders = list[tuple[bytes, bytes]]

# Pause the upstream socket while this much body waits for a consumer.
BUFFER_HIGH = 256 * 1024
MAX_HEAD_BYTES = 64 * 1024  # a response head larger than this is refused (the aiohttp path's 16 KB x 128 fields)
MAX_RESPONSE_HEADERS = 128
IDLE_TTL_S = 30.0  # an idle pooled connection older than this is closed, not reused


class ConnectFailed(ConnectionError):
    """No connection to the endpoint could be made: the request never left."""


class ConnectTimedOut(ConnectFailed, TimeoutError):
    """The connect did not finish within ``connect_timeout_s``: never sent."""


class UpstreamClosed(ConnectionError):
    """The endpoint closed or reset the connection (before or during its answer)."""

    def __init__(self, message: str, *, answered: bool) -> None:
        super().__init__(message)
        self.answered = answered  # a response head had arrived


class BadResponse(UpstreamClosed):
    """The endpoint's bytes are not a valid HTTP/1.1 response."""


class BodySink(Protocol):
    """Where a response body goes (the client connection): ``write`` each piece;
    ``flush`` what it holds back (the head) when the body is not there yet."""

    def write(self, data: bytes) -> None: ...

    def flush(self) -> None: ...


class LeanResponse:
    """One upstream response: its head, and its body as it arrives."""

    __slots__ = ("status", "reason", "raw_headers", "content_length", "chunked", "bodiless", "keep_alive", "hop",
                 "_conn", "_chunks", "_buffered", "_sink", "_tee", "_done", "_error", "_complete", "_callbacks",
                 "_paused")

    def __init__(self, conn: UpstreamConnection) -> None:
        self._conn: UpstreamConnection | None = conn
        self.status = 0
        self.reason = b""
        self.raw_headers: RawHeaders = []
        self.content_length: int | None = None
        self.chunked = False
        self.bodiless = False  # HEAD, 1xx, 204, 304: no body whatever the head says
        self.keep_alive = True
        self.hop: bytes | None = None  # the Connection field's tokens (several fields: joined)
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._sink: BodySink | None = None
        self._tee: Callable[[bytes], None] | None = None
        self._done: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._complete = False
        self._callbacks: list[Callable[[], None]] = []
        self._paused = False

    # ---------------------------------------------------------------- aiohttp-like bits the pool reads
    @property
    def connection(self) -> LeanResponse | None:
        """Not None while the body is still arriving (the pool's ``add_callback`` test)."""
        return None if self._conn is None else self

    def add_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once when the response is done with (read, failed or closed)."""
        if self._conn is None:
            callback()
        else:
            self._callbacks.append(callback)

    # ---------------------------------------------------------------- the body
    async def pipe(self, sink: BodySink, tee: Callable[[bytes], None] | None = None) -> None:
        """Deliver the body into ``sink.write`` (and ``tee``) as it arrives; returns
        at its end, raises :class:`UpstreamClosed` (or TimeoutError) when it broke."""
        if self._chunks:
            for chunk in self._chunks:
                if tee is not None:
                    tee(chunk)
                sink.write(chunk)
            self._chunks = []
            self._buffered = 0
        if self._complete or self._error is not None:
            self._finish_wait()
            if self._error is not None:
                raise self._error
            return
        sink.flush()  # more is to come, later: the head (and what was buffered) goes out now
        self._sink = sink
        self._tee = tee
        if self._paused:
            self.resume()
        assert self._conn is not None  # neither complete nor failed: the connection is still ours
        self._done = self._conn._loop.create_future()
        try:
            await self._done
        except asyncio.CancelledError:
            self.close()  # nobody reads the rest: the connection cannot be reused
            raise
        finally:
            self._sink = self._tee = None

    def pause(self) -> None:
        """Stop reading the upstream socket (the consumer's buffer is full)."""
        if not self._paused and self._conn is not None:
            self._paused = True
            self._conn.pause_reading()

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            if self._conn is not None:
                self._conn.resume_reading()

    def close(self) -> None:
        """Drop the response: a body not read to the end closes its connection."""
        conn = self._conn
        if conn is not None:
            conn.abort_exchange()

    def release(self) -> None:
        """Done with a response that was read to the end (or close it)."""
        if self._conn is not None:
            self.close()

    # ---------------------------------------------------------------- fed by the connection
    def _body(self, data: bytes) -> None:
        sink = self._sink
        if sink is not None:
            if self._tee is not None:
                self._tee(data)
            sink.write(data)
        else:
            self._chunks.append(bytes(data))
            self._buffered += len(data)
            if self._buffered > BUFFER_HIGH:
                self.pause()

    def _end(self, error: BaseException | None) -> None:
        """The body ended (``error`` None) or broke; the connection is no longer ours."""
        if self._conn is None:
            return
        self._conn = None
        self._complete = error is None
        self._error = error
        self._finish_wait()
        callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            cb()

    def _finish_wait(self) -> None:
        done = self._done
        if done is not None and not done.done():
            if self._error is not None:
                done.set_exception(self._error)
            else:
                done.set_result(None)


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to an endpoint; one exchange at a time."""

    __slots__ = ("client", "transport", "parser", "response", "_head_bytes", "_reason",
                 "_headers", "_head_wait", "_drain", "_closed", "_reused", "_head_method", "_last_io", "_timer",
                 "_read_timeout", "idle_since", "_keep_alive", "_eof_delimited", "_stopped", "_request_done", "_busy",
                 "_loop")

    def __init__(self, client: LeanEndpointClient) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: LeanResponse | None = None
        self._head_wait: asyncio.Future[LeanResponse] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._closed = False
        self._reused = False
        self._head_method = False
        self._headers: RawHeaders = []
        self._reason = b""
        self._head_bytes = 0
        self._last_io = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._read_timeout = client.read_timeout_s
        self.idle_since = 0.0
        self._keep_alive = True
        self._eof_delimited = False
        self._stopped = False  # the parser was stopped after a HEAD response's head
        self._request_done = True  # the whole request (body included) has been written
        self._busy = False  # an exchange is in flight (what the read timer watches)
        self._loop = client._loop

    # ---------------------------------------------------------------- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: BaseException | None) -> None:
        self._closed = True
        self._stop_timer()
        self.client._forget(self)
        resp = self.response
        if resp is not None:
            self.response = None
            if resp.status and self._eof_delimited and exc is None:
                resp._end(None)  # a body delimited by the connection's end is complete
            else:
                resp._end(UpstreamClosed("the connection broke during the response", answered=bool(resp.status)))
        wait = self._head_wait
        if wait is not None and not wait.done():
            wait.set_exception(UpstreamClosed("closed the connection without answering", answered=False))
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_exception(UpstreamClosed("closed the connection while the request was sent", answered=False))

    def pause_writing(self) -> None:
        if self._drain is None:
            self._drain = self._loop.create_future()

    def resume_writing(self) -> None:
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def data_received(self, data: bytes) -> None:
        waiting = self._head_wait
        if self.response is None:
            if waiting is None:  # unsolicited bytes on an idle connection: it cannot be reused
                self._close()
                return
            self._head_bytes += len(data)
        self._last_io = time.monotonic()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            if self._stopped:
                self._stopped = False
                return  # a HEAD response: the parser was told to stop (see on_headers_complete)
            self._fail(BadResponse("invalid response", answered=self.response is not None))
        except httptools.HttpParserUpgrade:
            self._fail(BadResponse("the endpoint switched protocols", answered=True))
        except httptools.HttpParserError as exc:
            self._fail(BadResponse(f"invalid response: {exc}", answered=self.response is not None))
            return
        if waiting is not None and self._head_wait is waiting and self._head_bytes > MAX_HEAD_BYTES:
            self._fail(BadResponse("response head too large", answered=False))

    def eof_received(self) -> bool | None:
        return False  # close the transport: connection_lost ends a close-delimited body

    # ---------------------------------------------------------------- httptools callbacks
    def on_message_begin(self) -> None:
        self._headers = []
        self._reason = b""

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        if len(self._headers) > MAX_RESPONSE_HEADERS:
            raise BadResponse("too many response headers", answered=False)

    def on_headers_complete(self) -> None:
        parser = self.parser
        status = parser.get_status_code()
        if status < 200:  # an interim answer (100 Continue, 103 Early Hints): not forwarded
            if status == 101:
                raise BadResponse("the endpoint switched protocols", answered=True)
            return
        if self._head_wait is None:  # an answer nobody asked for: the connection cannot be trusted
            raise BadResponse("a response without a request", answered=False)
        resp = LeanResponse(self)
        resp.status = status
        resp.reason = self._reason
        resp.raw_headers = self._headers
        self._keep_alive = resp.keep_alive = parser.should_keep_alive()
        length: int | None = None
        chunked = False
        for k, v in self._headers:
            lk = k.lower()
            if lk == b"content-length":
                length = int(v)
            elif lk == b"transfer-encoding" and b"chunked" in v.lower():
                chunked = True
            elif lk == b"connection":
                resp.hop = v if resp.hop is None else resp.hop + b"," + v
        resp.content_length = length
        resp.chunked = chunked
        resp.bodiless = self._head_method or status in (204, 304)
        self._eof_delimited = not (resp.bodiless or chunked or length is not None)
        self.response = resp
        wait = self._head_wait
        self._head_wait = None
        if wait is not None and not wait.done():
            wait.set_result(resp)
        if self._head_method:
            # llhttp cannot be told the request was HEAD: end the exchange here and stop the parser.
            self._stopped = True
            self._message_done()
            raise _HeadDone()

    def on_body(self, body: bytes) -> None:
        resp = self.response
        if resp is not None:
            resp._body(body)

    def on_message_complete(self) -> None:
        if self.response is None:
            return  # the end of an interim response
        self._message_done()

    # ---------------------------------------------------------------- the exchange
    def _message_done(self) -> None:
        resp = self.response
        self.response = None
        self._busy = False  # the read timer, if armed, lapses when it next fires
        if resp is None:
            return
        # A request whose body was not all sent (the endpoint answered early) leaves the
        # connection in the middle of a message: never reused.
        keep = resp.keep_alive and not self._closed and self._request_done
        if self._head_method:
            self.parser = httptools.HttpResponseParser(self)
        resp._end(None)
        if keep:
            self.client._idle(self)
        else:
            self._close()

    def send(self, head: bytes, method: str, reused: bool, *, body_follows: bool = False) -> asyncio.Future[LeanResponse]:
        """Write a request head (and a bytes body with it); the future gets the response head.
        ``body_follows``: a streamed body comes next (:meth:`body_sent` when it is all out)."""
        assert self.transport is not None
        self._reused = reused
        self._request_done = not body_follows
        self._head_method = method == "HEAD"
        self._head_bytes = 0
        self._head_wait = fut = self._loop.create_future()
        self.transport.write(head)
        self._arm_timer()
        return fut

    async def drain(self) -> None:
        drain = self._drain
        if drain is not None:
            await drain

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self._closed:
            self.transport.write(data)

    def body_sent(self) -> None:
        self._request_done = True

    def sent(self) -> None:
        """A piece of a streamed request body went out: the wait for the answer starts again."""
        self._last_io = time.monotonic()

    def adopt(self, client: LeanEndpointClient) -> None:
        """Serve ``client`` from now on (an idle connection another client of this address used)."""
        self.client = client
        if client.read_timeout_s != self._read_timeout:
            self._read_timeout = client.read_timeout_s
            self._stop_timer()  # set for the other timeout: the next send arms one for this one

    def pause_reading(self) -> None:
        if self.transport is not None and not self._closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self._closed:
            self.transport.resume_reading()
            self._last_io = time.monotonic()

    def abort_exchange(self) -> None:
        """The caller gave up on the response (client gone, body not wanted): close."""
        resp = self.response
        self.response = None
        if resp is not None:
            resp._end(UpstreamClosed("the response was abandoned", answered=True))
        self._close()

    def _fail(self, exc: BaseException) -> None:
        wait = self._head_wait
        self._head_wait = None
        if wait is not None and not wait.done():
            wait.set_exception(exc)
        resp = self.response
        self.response = None
        if resp is not None:
            resp._end(exc)
        self._close()

    def _close(self) -> None:
        self._stop_timer()
        if not self._closed:
            self._closed = True
            self.client._forget(self)
            if self.transport is not None:
                self.transport.close()

    # ---------------------------------------------------------------- read timeout (between reads, like sock_read)
    # One timer per connection, not one per exchange: sending records the time and arms
    # the timer only when none is pending; when it fires it measures the silence since
    # the last read or write and sets itself again for the rest, or lapses when no
    # exchange is in flight. A busy keep-alive connection arms about once a timeout.
    def _arm_timer(self) -> None:
        self._busy = True
        self._last_io = time.monotonic()
        timeout = self._read_timeout
        if timeout is not None and self._timer is None:
            self._timer = self._loop.call_later(timeout, self._check_timer)

    def _check_timer(self) -> None:
        self._timer = None
        timeout = self._read_timeout
        if not self._busy or self._closed or timeout is None:
            return
        idle = time.monotonic() - self._last_io
        if self.response is not None and self.response._paused:
            idle = 0.0  # paused by a slow consumer: not the endpoint's silence
        if idle < timeout:
            self._timer = self._loop.call_later(timeout - idle, self._check_timer)
            return
        self._fail(TimeoutError("no answer in time"))

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class _HeadDone(Exception):
    """Raised from on_headers_complete of a HEAD response to stop the parser."""


class KeepAlive:
    """The idle keep-alive connections of a set of clients, one list per address
    (``scheme://host:port``): what the served path's clients share (see the module docstring)."""

    __slots__ = ("_idle",)

    def __init__(self) -> None:
        self._idle: dict[str, deque[UpstreamConnection]] = {}

    def idle(self, address: str) -> deque[UpstreamConnection]:
        """The idle connections to ``address`` (most recently used last)."""
        found = self._idle.get(address)
        if found is None:
            found = self._idle[address] = deque()
        return found


class LeanEndpointClient:
    """Pooled keep-alive connections to one endpoint of an upstream (see the module docstring)."""

    __slots__ = ("name", "endpoint", "config", "host", "port", "authority", "base_path", "ssl", "read_timeout_s",
                 "connect_timeout_s", "limit", "_idle_conns", "_open", "_waiters", "_closed", "_loop", "_authority")

    def __init__(self, name: str, endpoint: str, config: UpstreamConfig, *, keepalive: KeepAlive | None = None) -> None:
        """``keepalive``: the idle lists shared with other clients (None: this client's own)."""
        url = URL(endpoint)
        self.name = name
        self.endpoint = endpoint
        self.config = config
        self.host = url.host or "127.0.0.1"
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.authority = url.raw_authority
        self._authority = url.raw_authority.encode("latin-1")
        self.base_path = url.raw_path.rstrip("/")
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if url.scheme == "https" else None
        self.read_timeout_s: float | None = config.timeout_s
        self.connect_timeout_s = config.connect_timeout_s
        self.limit = config.max_connections
        address = f"{url.scheme}://{self.host}:{self.port}"
        self._idle_conns: deque[UpstreamConnection] = deque() if keepalive is None else keepalive.idle(address)
        self._open: set[UpstreamConnection] = set()  # the connections counted against ``limit``
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False
        self._loop = asyncio.get_running_loop()

    # ---------------------------------------------------------------- the call
    async def send(
        self,
        method: str,
        raw_path: str,
        raw_query: str,
        headers: Headers,
        body: AsyncIterator[bytes] | bytes | None,
        timeout: Any = None,
    ) -> LeanResponse:
        """Send the request; returns once the response head arrived. ``timeout``
        is not used: the served path's only bound is the upstream's
        ``timeout_s`` between reads (a caller's own deadline cancels the call). A safe
        request whose connection the endpoint closed before answering is sent
        once more on a fresh one (a pooled connection it had closed, RFC 9112
        §9.3.1.1); nothing else is resent."""
        if self._closed:
            raise ConnectFailed("upstream client is closed")
        target = self.base_path + raw_path + ("?" + raw_query if raw_query else "")
        head = _request_head(method, target, headers, self._authority, chunked=_needs_chunking(body, headers))
        in_memory = body is None or isinstance(body, bytes)
        retry = in_memory and method in SAFE_METHODS
        stale: UpstreamClosed | None = None
        while True:
            # A warm idle connection is taken without a coroutine call (most requests).
            conn = self._take_idle(len(self._open) < self.limit)
            reused = conn is not None
            if conn is None:
                try:
                    conn, reused = await self._acquire()
                except ConnectFailed as exc:
                    if stale is not None:  # the first try may have been received: not "never sent"
                        raise stale from exc
                    raise
            try:
                if in_memory:  # the whole request in one write, inline
                    fut = conn.send(_with_body(head, body), method, reused)
                    try:
                        return await fut
                    except BaseException:
                        conn.abort_exchange()
                        raise
                return await self._exchange(conn, head, method, body, reused)  # type: ignore[arg-type]
            except UpstreamClosed as exc:
                if not (retry and not exc.answered):
                    raise
                retry = False  # a stale pooled connection: once more, on a fresh one
                stale = exc

    async def _exchange(self, conn: UpstreamConnection, head: bytes, method: str,
                        body: AsyncIterator[bytes], reused: bool) -> LeanResponse:
        """A request whose body streams in after its head."""
        try:
            fut = conn.send(head, method, reused, body_follows=True)
            try:
                await self._stream_body(conn, body, fut, chunked=_is_chunked_head(head))
            except UpstreamClosed:
                if not _answered(fut):
                    raise
                # The endpoint answered before reading the whole body (an early 413, 401) and
                # closed: its answer stands; the connection is not reused (see _message_done).
            return await fut
        except BaseException:
            conn.abort_exchange()
            raise

    @staticmethod
    async def _stream_body(conn: UpstreamConnection, body: AsyncIterator[bytes], answer: asyncio.Future[LeanResponse],
                           *, chunked: bool) -> None:
        async for chunk in body:
            if answer.done():
                return  # answered (or failed) already: the rest of the body is not wanted
            if not chunk:
                continue
            if chunked:
                conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            else:
                conn.write(chunk)
            conn.sent()
            await conn.drain()
        if chunked:
            conn.write(b"0\r\n\r\n")
        conn.body_sent()

    # ---------------------------------------------------------------- the pool
    async def _acquire(self) -> tuple[UpstreamConnection, bool]:
        """A pooled connection (True) or a new one (False). At ``max_connections``
        the wait for a free one counts against ``connect_timeout_s``, as a
        connect does: past it the request never left."""
        conn = self._take_idle(len(self._open) < self.limit)
        if conn is not None:
            return conn, True
        if len(self._open) >= self.limit:
            try:
                async with asyncio.timeout(self.connect_timeout_s):
                    while True:
                        waiter = self._loop.create_future()
                        self._waiters.append(waiter)
                        try:
                            await waiter
                        finally:
                            if waiter in self._waiters:
                                self._waiters.remove(waiter)
                        conn = self._take_idle(len(self._open) < self.limit)
                        if conn is not None:
                            return conn, True
                        if len(self._open) < self.limit:
                            break
            except TimeoutError as exc:
                raise ConnectTimedOut(f"no connection to {self.endpoint} free in time") from exc
        return await self._connect(), False

    def _take_idle(self, may_grow: bool) -> UpstreamConnection | None:
        """The most recently used live idle connection to this address (the likeliest
        to be alive); one another client used last only when ``may_grow`` (this one is
        under its ``limit``): it is this client's from now on."""
        now = time.monotonic()
        idle = self._idle_conns
        i = len(idle) - 1
        while i >= 0:
            conn = idle[i]
            if conn._closed or conn.transport is None or conn.transport.is_closing():
                del idle[i]
            elif now - conn.idle_since > IDLE_TTL_S:
                del idle[i]
                conn._close()
            elif conn.client is self or may_grow:
                del idle[i]
                if conn.client is not self:
                    conn.client._give_up(conn)
                    conn.adopt(self)
                    self._open.add(conn)
                return conn
            i -= 1
        return None

    def _give_up(self, conn: UpstreamConnection) -> None:
        """``conn`` was taken by another client of its address: room for one more here."""
        self._forget(conn)

    async def _connect(self) -> UpstreamConnection:
        conn = UpstreamConnection(self)
        self._open.add(conn)
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                await self._loop.create_connection(
                    lambda: conn, self.host, self.port, ssl=self.ssl,
                    server_hostname=self.host if self.ssl is not None else None,
                )
        except TimeoutError as exc:
            self._forget(conn)
            raise ConnectTimedOut(f"cannot connect to {self.endpoint} in time") from exc
        except OSError as exc:
            self._forget(conn)
            raise ConnectFailed(f"cannot connect: {exc}") from exc
        except BaseException:
            self._forget(conn)
            raise
        return conn

    def _idle(self, conn: UpstreamConnection) -> None:
        if self._closed:
            conn._close()
            return
        conn.idle_since = time.monotonic()
        self._idle_conns.append(conn)
        self._wake()

    def _forget(self, conn: UpstreamConnection) -> None:
        if conn in self._open:
            self._open.discard(conn)
            self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    @property
    def open_connections(self) -> int:
        return len(self._open)

    async def close(self) -> None:
        self._closed = True
        for conn in list(self._open):  # idle ones too: closed, they leave the shared list when next seen
            conn._close()
        await asyncio.sleep(0)


def _answered(fut: asyncio.Future[LeanResponse]) -> bool:
    return fut.done() and not fut.cancelled() and fut.exception() is None


def _needs_chunking(body: AsyncIterator[bytes] | bytes | None, headers: Headers) -> bool:
    """A body without a Content-Length (the client's was chunked) is sent chunked."""
    if body is None:
        return False
    return not any(k.lower() == "content-length" for k, _ in headers)


def _with_body(head: bytes, body: bytes | None) -> bytes:
    """The head and a body in memory as one write (framed as one chunk when the head says chunked)."""
    if body is None:
        return head
    if _is_chunked_head(head):
        return head + ((b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)) if body else b"0\r\n\r\n")
    return head + body


def _is_chunked_head(head: bytes) -> bool:
    return head.endswith(b"Transfer-Encoding: chunked\r\n\r\n")


def _request_head(method: str, target: str, headers: Headers, authority: bytes, *, chunked: bool) -> bytes:
    """The request head as written: request line, Host (the endpoint's unless
    given), the headers in order, chunked framing for a streamed body of unknown length.

    >>> _request_head("GET", "/a%2Fb?x=1", [("X-A", "1")], b"10.0.0.1:8080", chunked=False)
    b'GET /a%2Fb?x=1 HTTP/1.1\\r\\nHost: 10.0.0.1:8080\\r\\nX-A: 1\\r\\n\\r\\n'
    """
    has_host = False
    lines = []
    for k, v in headers:
        if len(k) == 4 and k.lower() == "host":
            has_host = True
        lines.append(f"{k}: {v}\r\n")
    return b"".join((f"{method} {target} HTTP/1.1\r\n".encode("latin-1"),
                     b"" if has_host else b"Host: " + authority + b"\r\n",
                     "".join(lines).encode("utf-8", "surrogateescape"),
                     b"Transfer-Encoding: chunked\r\n\r\n" if chunked else b"\r\n"))
