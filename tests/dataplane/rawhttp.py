"""A raw asyncio HTTP/1.1 upstream and client for the fidelity tests.

Both work on bytes: aiohttp and httpx normalise URLs, which is exactly what the
proxy must not do, so neither can be used to send ``/a/../b`` or ``%2F``.

The upstream echoes what it received (method, raw target, end-to-end headers in
order, body length and hash) as JSON, and has a few special paths:
``/_204``, ``/_304``, ``/_chunked``, ``/_cookies``, ``/_gzip``, ``/_big?n=N``
(streamed), ``/_slow?s=S``, ``/_reset`` (cut mid-body), ``/_500``,
``/_badjson``, ``/_drip`` (endless slow stream), ``/_late?s=S`` (the head now, the body S seconds later).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
from dataclasses import dataclass, field

HOP = {b"connection", b"keep-alive", b"proxy-connection", b"te", b"transfer-encoding", b"upgrade"}
FIXED_DATE = b"Date: Tue, 01 Jan 2030 00:00:00 GMT\r\n"


@dataclass
class Seen:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class RawUpstream:
    """The echo upstream; ``name`` is reported in ``X-Upstream`` and the echo."""

    name: str = "legacy"
    seen: list[Seen] = field(default_factory=list)
    open_connections: int = 0
    closed_connections: int = 0
    server: asyncio.AbstractServer | None = None
    port: int = 0
    writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> RawUpstream:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for w in list(self.writers):
                w.close()
            await self.server.wait_closed()

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open_connections += 1
        self.writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head[:-4].split(b"\r\n")
                method, target, _ = lines[0].decode("latin-1").split(" ", 2)
                headers = [tuple(x.strip() for x in line.decode("utf-8", "replace").split(":", 1)) for line in lines[1:]]
                lower = {k.lower(): v for k, v in headers}
                if lower.get("expect", "").lower() == "100-continue":
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                body = await self._body(reader, lower)
                if body is None:
                    return
                listed = {t.strip().lower().encode() for t in lower.get("connection", "").split(",")}
                hop = HOP | listed
                seen = Seen(method, target, [(k, v) for k, v in headers if k.lower().encode() not in hop], body)
                self.seen.append(seen)
                if not await self._answer(writer, seen, lower):
                    return
        finally:
            self.closed_connections += 1
            self.writers.discard(writer)
            writer.close()

    async def _body(self, reader: asyncio.StreamReader, h: dict[str, str]) -> bytes | None:
        try:
            if "chunked" in h.get("transfer-encoding", "").lower():
                out = bytearray()
                while True:
                    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    if size == 0:
                        await reader.readuntil(b"\r\n")
                        return bytes(out)
                    out += await reader.readexactly(size)
                    await reader.readexactly(2)
            n = int(h.get("content-length", "0"))
            if n > 1_000_000:  # count big uploads without keeping them
                digest = hashlib.sha256()
                left = n
                while left:
                    chunk = await reader.read(min(left, 1 << 20))
                    if not chunk:
                        return None
                    digest.update(chunk)
                    left -= len(chunk)
                return b"big:" + str(n).encode() + b":" + digest.hexdigest().encode()
            return await reader.readexactly(n)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            return None

    async def _answer(self, w: asyncio.StreamWriter, seen: Seen, h: dict[str, str]) -> bool:
        path, _, query = seen.target.partition("?")
        head_only = seen.method == "HEAD"
        up = f"X-Upstream: {self.name}\r\n".encode()
        if path == "/_204":
            w.write(b"HTTP/1.1 204 No Content\r\n" + FIXED_DATE + up + b"\r\n")
        elif path == "/_304":
            w.write(b"HTTP/1.1 304 Not Modified\r\n" + FIXED_DATE + up + b'ETag: "v1"\r\n\r\n')
        elif path == "/_chunked":
            w.write(b"HTTP/1.1 200 OK\r\n" + FIXED_DATE + up + b"Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
            if not head_only:
                for part in (b"one,", b"two,", b"three"):
                    w.write(b"%x\r\n%s\r\n" % (len(part), part))
                    await w.drain()
                w.write(b"0\r\n\r\n")
        elif path == "/_gzip":
            data = gzip.compress(b'{"zipped": true}', mtime=0)
            self._whole(w, b"200 OK", data, b"Content-Encoding: gzip\r\nContent-Type: application/json\r\n" + up,
                        head_only)
        elif path == "/_cookies":
            extra = b"Set-Cookie: a=1; Path=/\r\nX-Multi: x\r\nSet-Cookie: b=2; HttpOnly\r\nX-Multi: y\r\n" + up
            self._whole(w, b"200 OK", b"cookies", extra + b"Content-Type: text/plain\r\n", head_only)
        elif path == "/_big":
            n = int(query.split("=")[1])
            w.write(b"HTTP/1.1 200 OK\r\n" + FIXED_DATE + up + b"Content-Type: application/octet-stream\r\n"
                    + b"Content-Length: %d\r\n\r\n" % n)
            block = b"x" * (1 << 20)
            left = 0 if head_only else n
            while left:
                w.write(block[: min(left, len(block))])
                left -= min(left, len(block))
                await w.drain()
        elif path == "/_slow":
            await asyncio.sleep(float(query.split("=")[1]))
            self._whole(w, b"200 OK", self._echo(seen), b"Content-Type: application/json\r\n" + up, head_only)
        elif path == "/_late":
            w.write(b"HTTP/1.1 200 OK\r\n" + FIXED_DATE + up + b"Content-Length: 4\r\n\r\n")
            await w.drain()
            await asyncio.sleep(float(query.split("=")[1]))
            w.write(b"late")
        elif path == "/_reset":
            w.write(b"HTTP/1.1 200 OK\r\n" + FIXED_DATE + up + b"Content-Length: 100000\r\n\r\n" + b"y" * 1000)
            await w.drain()
            return False
        elif path == "/_500":
            self._whole(w, b"500 Internal Server Error", b'{"error": "boom"}', b"Content-Type: application/json\r\n" + up,
                        head_only)
        elif path == "/_badjson":
            self._whole(w, b"200 OK", b'{"broken": ', b"Content-Type: application/json\r\n" + up, head_only)
        elif path == "/_drip":
            w.write(b"HTTP/1.1 200 OK\r\n" + FIXED_DATE + up + b"Transfer-Encoding: chunked\r\n\r\n")
            try:
                while True:
                    w.write(b"400\r\n" + b"d" * 1024 + b"\r\n")
                    await w.drain()
                    await asyncio.sleep(0.01)
            except ConnectionError:
                return False
        else:
            self._whole(w, b"200 OK", self._echo(seen), b"Content-Type: application/json\r\n" + up, head_only)
        await w.drain()
        return h.get("connection", "").lower() != "close"

    def _echo(self, seen: Seen) -> bytes:
        return json.dumps({
            "upstream": self.name, "method": seen.method, "target": seen.target, "headers": seen.headers,
            "body_len": len(seen.body), "body_sha": hashlib.sha256(seen.body).hexdigest(),
        }).encode()

    @staticmethod
    def _whole(w: asyncio.StreamWriter, status: bytes, body: bytes, extra: bytes, head_only: bool) -> None:
        w.write(b"HTTP/1.1 " + status + b"\r\n" + FIXED_DATE + extra + b"Content-Length: %d\r\n\r\n" % len(body)
                + (b"" if head_only else body))


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    complete: bool = True
    interim: list[int] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def json(self) -> dict:  # type: ignore[type-arg]
        return json.loads(self.body)


async def raw_request(port: int, data: bytes, *, head: bool = False, timeout: float = 10.0) -> RawResponse:
    """Send raw bytes on a fresh connection; read one response (skipping 1xx)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(read_response(reader, head=head), timeout)
    finally:
        writer.close()


async def read_response(reader: asyncio.StreamReader, *, head: bool = False) -> RawResponse:
    interim: list[int] = []
    while True:
        raw = await reader.readuntil(b"\r\n\r\n")
        lines = raw[:-4].decode("latin-1").split("\r\n")
        _, status, reason = (lines[0].split(" ", 2) + [""])[:3]
        if 100 <= int(status) < 200:
            interim.append(int(status))
            continue
        break
    headers = [(k, v.strip()) for k, v in (line.split(":", 1) for line in lines[1:])]
    lower = {k.lower(): v for k, v in headers}
    code = int(status)
    body = b""
    complete = True
    try:
        if head or code in (204, 304):
            pass
        elif "chunked" in lower.get("transfer-encoding", "").lower():
            out = bytearray()
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                out += await reader.readexactly(size)
                await reader.readexactly(2)
            body = bytes(out)
        elif "content-length" in lower:
            body = await reader.readexactly(int(lower["content-length"]))
        else:
            body = await reader.read()
    except asyncio.IncompleteReadError as exc:
        body, complete = exc.partial, False
    return RawResponse(code, reason, headers, body, complete, interim)
