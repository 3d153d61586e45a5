"""The proxy's listening socket and its client connections: how long a client
may take, how many it may hold, and what the proxy itself answers when it
refuses one. The request handler (handler.py) runs behind it.

aiohttp's low-level server keeps a connection that sent half a request head
open for its keep-alive timeout (3,630 s by default), and answers a malformed
head with a 400 that echoes the client's first bytes and names aiohttp's and
Python's versions. :class:`ProxyListener` runs every connection as a
:class:`ClientConnection` with the :class:`~strangler_proxy.config.ProxyLimits`:

* a complete request head must arrive within ``header_timeout_s`` (from the
  connection's start, or from the first byte of the next request on a kept-alive
  connection): else ``408`` and close, or a silent close when nothing came;
* an idle kept-alive connection is closed after ``keepalive_timeout_s``;
* at most ``max_connections`` are open: the next one is answered ``503`` with
  ``Connection: close`` and closed;
* a request line over ``max_line_size`` is a ``414``, a header field over
  ``max_field_size`` or more than ``max_headers`` fields a ``431``;
* the proxy's own answers are fixed short texts (nothing of the client's input)
  with ``Server: <server_header>`` or none; an upstream's answer (an
  :class:`UpstreamAnswer`) keeps its own ``Server``.

    runner, port = await start_listener(handler, "127.0.0.1", 0, ProxyLimits(header_timeout_s=5))
    ...
    await runner.cleanup()      # stops listening, then closes the handler's upstream pools

aiohttp has no public hooks for head timing; where this module overrides or
reads a private member of ``RequestHandler`` it says why, next to the code.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Protocol

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

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
# aiohttp raises a plain BadHttpMessage, no subclass, for this one.
_TOO_MANY_HEADERS = "Too many headers"


def _page(status: int) -> tuple[str, bytes]:
    """The reason phrase and fixed body of the proxy's own answer with ``status``.

    >>> _page(414)
    ('URI Too Long', b'414 URI Too Long: the request line is longer than the proxy accepts.\\n')
    >>> _page(502)
    ('Bad Gateway', b'502 Bad Gateway.\\n')
    """
    reason, text = _PAGES.get(status) or (HTTPStatus(status).phrase, "")
    return reason, (f"{status} {reason}: {text}.\n" if text else f"{status} {reason}.\n").encode()


def own_page(status: int) -> web.Response:
    """The proxy's own answer (an error); the connection closes after it."""
    reason, body = _page(status)
    resp = web.Response(status=status, reason=reason, body=body, content_type="text/plain", charset="utf-8",
                        headers={"Connection": "close"})
    resp.force_close()
    return resp


class _RawPage:
    """A whole answer written straight to the transport, where aiohttp has no
    request to answer (a head that never completed, a refused connection)."""

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
        return self._head + formatdate(usegmt=True).encode() + self._tail


class UpstreamAnswer:
    """Marks a response that carries an upstream's answer: its headers are the
    upstream's, ``Server`` (or its absence) included."""

    __slots__ = ()


class ProxyRequest(BaseRequest):
    """The request object of a :class:`ProxyListener`: it puts the configured
    ``Server`` on every answer of the proxy's own."""

    async def _prepare_hook(self, response: web.StreamResponse) -> None:
        # aiohttp calls this for every response after preparing its headers (with
        # its own "Server: Python/x aiohttp/y") and before writing them, so the
        # proxy's own answers -- error pages, 502/504 problems, the GraphQL
        # gateway's -- are all seen here, whoever built them.
        if isinstance(response, UpstreamAnswer):
            return
        server = self.protocol.server_header  # type: ignore[attr-defined]  # a ClientConnection
        if server is None:
            response.headers.popall("Server", None)
        else:
            response.headers["Server"] = server


class ClientConnection(RequestHandler):
    """aiohttp's server protocol with the proxy's limits (see the module docstring)."""

    __slots__ = ("server_header", "_server", "_head_timer", "_line_len", "_line_done", "_counted", "_refused",
                 "_linger")

    def __init__(self, server: ProxyListener, **kwargs: Any) -> None:
        super().__init__(server, **kwargs)
        self._server = server  # aiohttp drops its own reference on connection_lost
        self.server_header = server.limits.server_header
        self._head_timer: asyncio.TimerHandle | None = None
        # How far the current head's request line has come: the 414/431 choice.
        self._line_len = 0
        self._line_done = False
        self._counted = False
        self._refused: asyncio.Transport | None = None
        self._linger: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ open / close
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        server = self._server
        if server.open_connections >= server.limits.max_connections:
            self._refuse(transport)  # type: ignore[arg-type]  # a stream server's transport
            return
        server.open_connections += 1
        self._counted = True
        super().connection_made(transport)
        # The first head is due header_timeout_s after the connection opens.
        self._head_timer = self._loop.call_later(server.limits.header_timeout_s, self._head_expired)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused is not None:
            self._server.refused.discard(self._refused)
            if self._linger is not None:
                self._linger.cancel()
            self._refused = self._linger = None
            return
        if self._counted:
            self._counted = False
            self._server.open_connections -= 1
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _refuse(self, transport: asyncio.Transport) -> None:
        """Answer 503 without starting aiohttp's handler, then close (never counted)."""
        self._refused = transport
        server = self._server
        server.refused.add(transport)
        server.note_refusal()
        transport.write(server.refusal_page.render())
        if transport.can_write_eof():
            transport.write_eof()
        self._linger = self._loop.call_later(REFUSAL_LINGER_S, transport.close)

    # ------------------------------------------------------------ request heads
    def data_received(self, data: bytes) -> None:
        if self._refused is not None:
            return  # read and dropped while the refusal lingers
        timer = self._head_timer
        # The first bytes of the next request on a kept-alive connection.
        starting = timer is None and bool(data) and self._awaiting_head()
        if starting:
            self._line_len = 0
            self._line_done = False
        if not self._line_done:
            nl = data.find(b"\n")
            if nl < 0:
                self._line_len += len(data)
            else:
                self._line_len += nl
                self._line_done = True
        # aiohttp counts every parsed head (and every refused one) in
        # _request_count: a change means the head arrived in time.
        count = self._request_count
        super().data_received(data)
        if self._request_count != count:
            if timer is not None:
                timer.cancel()
                self._head_timer = None
        elif starting:
            self._head_timer = self._loop.call_later(self._server.limits.header_timeout_s, self._head_expired)

    def _awaiting_head(self) -> bool:
        # aiohttp's handler loop parks on _waiter while it waits for the next
        # message; its own keep-alive timer makes the same test (no public one).
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    def _head_expired(self) -> None:
        self._head_timer = None
        transport = self.transport
        if transport is None or not self._awaiting_head():
            return  # closed already, or a request is being handled
        server = self._server
        server.head_timeouts += 1
        if self._line_len or self._line_done:  # part of a head came: say why the connection ends
            transport.write(server.timeout_page.render())
            self.logger.debug("408 to %s: no complete request head within %gs", self.peername,
                              server.limits.header_timeout_s)
        self.force_close()  # the transport writes what it holds, then closes

    def _process_keepalive(self) -> None:
        # aiohttp's idle timer closes a connection whose handler waits for a
        # head, however much of that head has arrived. While one is arriving
        # the head deadline governs instead; aiohttp arms its timer again after
        # the response.
        if self._head_timer is not None:
            self._keepalive_handle = None
            return
        super()._process_keepalive()

    # ------------------------------------------------------------ own answers
    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        """The proxy's own page for a head it cannot parse (or a handler that
        failed): 414 / 431 for heads over the limits, never an echo of the input."""
        if isinstance(exc, LineTooLong):
            status = 414 if self._in_request_line() else 431
        elif isinstance(exc, BadHttpMessage) and exc.message.startswith(_TOO_MANY_HEADERS):
            status = 431
        if status >= 500:
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
        else:  # a client's mistake (or a scan): not worth a traceback at ERROR
            self.logger.debug("%d to %s: %r", status, request.remote, exc)
        if request.writer.output_size > 0:
            raise ConnectionError("the response has started: no error page can follow it")
        return own_page(status)

    def _in_request_line(self) -> bool:
        # The parser checks the request-target against max_line_size and each
        # header field against max_field_size but does not say which it was:
        # either the first line had not ended, or it is itself over the limit.
        return not self._line_done or self._line_len > self._server.limits.max_line_size


class Handler(Protocol):
    """What the listener runs for each request (``ProxyHandler``), and how its pools close."""

    def __call__(self, request: BaseRequest) -> Awaitable[web.StreamResponse]: ...

    async def close(self) -> None: ...


class ProxyListener(web.Server):
    """aiohttp's low-level server running the proxy's handler; its connections
    obey :class:`ProxyLimits`.

    ``open_connections``, ``head_timeouts`` and ``refused_total`` count what
    the limits did (for logs, tests and metrics).
    """

    def __init__(self, handler: Handler, limits: ProxyLimits, **kwargs: Any) -> None:
        self.handler = handler
        self.limits = limits
        self.open_connections = 0
        self.head_timeouts = 0
        self.refused_total = 0
        self.refused: set[asyncio.Transport] = set()  # refused connections still lingering
        self.timeout_page = _RawPage(408, limits.server_header)
        self.refusal_page = _RawPage(503, limits.server_header, "Retry-After: 1\r\n")
        self._next_refusal_log = 0.0
        self._event_loop = asyncio.get_running_loop()
        # access_log=None: the proxy writes its own JSON line (accesslog.py);
        # aiohttp's text line would repeat it at a cost on every request.
        kwargs.setdefault("access_log", None)
        self._protocol_kwargs: dict[str, Any] = {
            **kwargs,
            "keepalive_timeout": limits.keepalive_timeout_s,
            "max_line_size": limits.max_line_size,
            "max_field_size": limits.max_field_size,
            "max_headers": limits.max_headers,
        }
        # handler_cancellation: a client that disconnects cancels its handler, which
        # closes the upstream request/response instead of finishing it for nobody.
        super().__init__(handler, request_factory=self._make_proxy_request,
                         handler_cancellation=True, **self._protocol_kwargs)

    def __call__(self) -> ClientConnection:
        """The protocol factory the listening socket calls for each connection."""
        return ClientConnection(self, loop=self._event_loop, **self._protocol_kwargs)

    def _make_proxy_request(
        self, message: RawRequestMessage, payload: StreamReader, protocol: RequestHandler,
        writer: AbstractStreamWriter, task: asyncio.Task[None],
    ) -> BaseRequest:
        return ProxyRequest(message, payload, protocol, writer, task, self._event_loop)

    def note_refusal(self) -> None:
        self.refused_total += 1
        now = time.monotonic()
        if now >= self._next_refusal_log:
            self._next_refusal_log = now + REFUSAL_LOG_EVERY_S
            log.warning("refusing client connections: %d open, proxy.limits.max_connections is %d "
                        "(%d refused so far)", self.open_connections, self.limits.max_connections,
                        self.refused_total)

    def pre_shutdown(self) -> None:
        super().pre_shutdown()
        for transport in list(self.refused):
            transport.close()


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


class ProxyRunner(web.ServerRunner):
    """ServerRunner whose cleanup also closes the handler's upstream connection pools."""

    def __init__(self, server: ProxyListener, **kwargs: Any) -> None:
        super().__init__(server, **kwargs)
        self.proxy_server = server

    async def _cleanup_server(self) -> None:
        await self.proxy_server.handler.close()


async def start_listener(
    handler: Handler, host: str, port: int, limits: ProxyLimits, *, upstream_connections: int = 0
) -> tuple[ProxyRunner, int]:
    """Listen on host:port (0 = any free port) with ``limits``; returns the runner and the bound port."""
    check_open_files(limits, upstream_connections)
    runner = ProxyRunner(ProxyListener(handler, limits), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    sockets = runner.addresses
    bound = sockets[0][1] if sockets else port
    return runner, int(bound)
