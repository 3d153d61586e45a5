"""Recorded traffic (HAR 1.2) read into a replay schedule for :func:`~strangler_proxy.stack.traffic.run_schedule`.

A HAR file is what browsers' devtools ("Save all as HAR") and mitmproxy export:
``log.entries[]``, each with a ``request`` (method, url, headers, postData), a
``startedDateTime`` and the ``response`` it got. Two steps, both pure:

- :func:`parse_har` -- the file's text into a :class:`Recording`: one
  :class:`RecordedRequest` per usable entry of the recording's host, in the
  order they started, and one :class:`HarProblem` per entry it refuses (naming
  the entry's index and URL). A file that cannot be read at all raises
  :class:`~strangler_proxy.errors.HarError`.
- :class:`Replay` -- a recording as a schedule: each request due at its
  recorded offset from the first, divided by ``speed`` (0: all at once, as
  fast as the concurrency allows); writes left out unless asked for.

    recording = parse_har(Path("visit.har").read_bytes(), source="visit.har")
    summary = await run_schedule(Replay(recording, speed=2), client)

What is sent for an entry, and how its answer is judged:

- the target is the recorded path and query, byte for byte (the fragment
  dropped, characters a browser would percent-encode percent-encoded); the
  scheme and host are the client's (the proxy);
- the headers as recorded, in order, minus hop-by-hop ones, HTTP/2 pseudo
  headers (``:authority``...), ``Host``, ``Content-Length``, ``Expect``,
  ``Proxy-Authorization`` and every ``X-Strangler-*``; HTTP/2's several
  ``cookie`` headers become one; cookies and ``Authorization`` stay;
- the body is ``postData.text`` (in the charset its mimeType names, base64 when
  ``encoding`` says so) or, for a form recorded as ``params`` only, those
  params url-encoded;
- an answer is correct when its status has the class of the recorded one
  (2xx for a recorded 2xx...); with no recorded status (0: the browser got
  none), any status below 500. A GraphQL request whose recorded answer had
  no ``errors`` is an error when the replayed answer has some.

Only entries to one host are replayed -- the most common one, or the one
asked for: a page's fonts, analytics and CDN requests are not the proxy's.
A write is a request whose method is not GET, HEAD or OPTIONS, except a
GraphQL POST whose operation is a query.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
import math
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from graphql import GraphQLError, OperationDefinitionNode, OperationType, parse

from strangler_proxy.dataplane.forwarder import HOP_BY_HOP
from strangler_proxy.errors import HarError
from strangler_proxy.headers import CONTROL_PREFIX
from strangler_proxy.routing.methods import SAFE_METHODS
from strangler_proxy.stack.traffic import PlannedRequest

# Request headers never replayed as recorded: the hop-by-hop ones (the
# connection was the browser's), Host (the proxy's, from the client's URL),
# Content-Length (computed from the body), Expect (no 100-continue here) and
# Proxy-Authorization (credentials for the recording's own forward proxy).
DROPPED_HEADERS = frozenset(n.decode("ascii") for n in HOP_BY_HOP) | {
    "host", "content-length", "expect", "proxy-authorization",
}
_CONTROL_PREFIX = CONTROL_PREFIX.decode("ascii")
# Path segments that name a request's kind in the summary: "GET /api/titles".
KIND_SEGMENTS = 2
# Reasons a request is left out, as the summary counts them.
SKIPPED_WRITE = "write"
SKIPPED_OTHER_HOST = "other host"
SKIPPED_INVALID = "invalid"

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")  # RFC 9110 token: method and header names
_BAD_VALUE = re.compile(r"[\r\n\x00]")
_VERSION = re.compile(r"1(\.\d+)*\Z")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_TUNNEL_METHODS = frozenset({"CONNECT"})
_FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True, slots=True)
class HarProblem:
    """One entry that is not replayed, and why.

    >>> str(HarProblem(3, "GET", "https://cdn.example/a.js", "to host cdn.example", SKIPPED_OTHER_HOST))
    'entry 3 (GET https://cdn.example/a.js): to host cdn.example'
    """

    entry: int  # index in log.entries, from 0
    method: str | None
    url: str | None
    message: str
    reason: str = SKIPPED_INVALID  # SKIPPED_INVALID or SKIPPED_OTHER_HOST

    def __str__(self) -> str:
        what = " ".join(p for p in (self.method, self.url) if p)
        return f"entry {self.entry}" + (f" ({what})" if what else "") + f": {self.message}"

    def as_json(self) -> dict[str, Any]:
        return {"entry": self.entry, "method": self.method, "url": self.url, "reason": self.reason,
                "message": self.message}


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One replayable entry: when it started and what to send for it."""

    entry: int
    url: str  # as recorded
    started: datetime  # timezone-aware
    request: PlannedRequest
    write: bool


@dataclass(frozen=True)
class Recording:
    """A HAR file as read: the host's requests and the entries refused."""

    source: str
    entries: int  # in the file
    host: str | None  # the host replayed (None: no entry had a usable URL)
    hosts: Mapping[str, int]  # every host with its number of usable entries, most common first
    requests: tuple[RecordedRequest, ...]  # to ``host``, in the order they started
    problems: tuple[HarProblem, ...]  # by entry index


class _Refused(Exception):
    """An entry that cannot be replayed (caught per entry, never leaves this module)."""


@dataclass(frozen=True, slots=True)
class _Parsed:
    host: str
    recorded: RecordedRequest


def parse_har(data: bytes | str, *, source: str = "HAR", host: str | None = None) -> Recording:
    """Read a HAR file's content. ``host`` (``name`` or ``name:port``) picks the
    host to replay; by default the one most entries go to (the first of equals).

    Raises :class:`HarError` when the file as a whole cannot be replayed.

    >>> har = '{"log": {"version": "1.2", "entries": [{"startedDateTime": "2024-05-01T10:00:00Z",'
    >>> har += ' "request": {"method": "GET", "url": "https://a.example/x?q=1#top", "headers": []}}]}}'
    >>> recording = parse_har(har)
    >>> recording.host, recording.requests[0].request.path
    ('a.example', '/x?q=1')
    """
    document = _document(data, source)
    log = document.get("log") if isinstance(document, dict) else None
    entries = log.get("entries") if isinstance(log, dict) else None
    if not isinstance(log, dict) or not isinstance(entries, list):
        raise HarError('not a HAR file: no log.entries (a HAR is {"log": {"version": "1.2", "entries": [...]}}, '
                       "as browsers' devtools and mitmproxy export it)", source=source)
    version = log.get("version")
    if version not in (None, "") and not (isinstance(version, str) and _VERSION.match(version)):
        raise HarError(f"HAR version {version!r} is not supported (1.x is)", source=source)

    problems: list[HarProblem] = []
    parsed: list[_Parsed] = []
    for index, raw in enumerate(entries):
        method, url = _what(raw)
        try:
            parsed.append(_entry(index, raw))
        except _Refused as exc:
            problems.append(HarProblem(index, method, url, str(exc)))

    hosts = Counter(p.host for p in parsed)
    chosen = _host_key(host) if host else (hosts.most_common(1)[0][0] if hosts else None)
    for p in parsed:
        if p.host != chosen:
            asked = "--host" if host else "the recording's main host"
            problems.append(HarProblem(
                p.recorded.entry, p.recorded.request.method, p.recorded.url,
                f"to host {p.host}, not {chosen} ({asked}); --host {p.host} replays that host's entries",
                SKIPPED_OTHER_HOST,
            ))
    requests = sorted((p.recorded for p in parsed if p.host == chosen), key=lambda r: r.started)
    return Recording(
        source, len(entries), chosen, dict(hosts.most_common()), tuple(requests),
        tuple(sorted(problems, key=lambda p: p.entry)),
    )


@dataclass(frozen=True)
class Replay:
    """A :class:`Recording` as a :class:`~strangler_proxy.stack.traffic.Schedule`.

    Request ``k`` is due at its recorded offset from the first request sent,
    divided by ``speed`` (2: twice as fast; 0: everything at once). Writes are
    left out, and counted, unless ``include_writes``.
    """

    recording: Recording
    speed: float = 1.0
    include_writes: bool = False
    selected: tuple[RecordedRequest, ...] = field(init=False)

    def __post_init__(self) -> None:
        if not math.isfinite(self.speed) or self.speed < 0:
            raise ValueError(f"speed must be a number >= 0 (0: as fast as possible), not {self.speed}")
        chosen = tuple(r for r in self.recording.requests if self.include_writes or not r.write)
        object.__setattr__(self, "selected", chosen)

    @property
    def planned(self) -> int:
        return len(self.selected)

    @property
    def end_s(self) -> float | None:
        return None  # a replay sends every request, however late

    @property
    def skipped(self) -> Mapping[str, int]:
        refused = Counter(p.reason for p in self.recording.problems)
        return {
            SKIPPED_WRITE: len(self.recording.requests) - len(self.selected),
            SKIPPED_OTHER_HOST: refused[SKIPPED_OTHER_HOST],
            SKIPPED_INVALID: refused[SKIPPED_INVALID],
        }

    @property
    def span_s(self) -> float:
        """Seconds from the first request due to the last."""
        offsets = [offset for offset, _ in self.due()]
        return offsets[-1] if offsets else 0.0

    def due(self) -> Iterator[tuple[float, PlannedRequest]]:
        if not self.selected:
            return
        first = self.selected[0].started
        for recorded in self.selected:
            offset = (recorded.started - first).total_seconds()
            yield (offset / self.speed if self.speed else 0.0), recorded.request


# ------------------------------------------------------------------ the file
def _document(data: bytes | str, source: str) -> Any:
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise HarError(f"not UTF-8 text (byte {exc.start}); a HAR file is JSON", source=source) from exc
    text = data.removeprefix("\ufeff")
    if not text.strip():
        raise HarError("empty file, not a HAR", source=source)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        # Out of input while a value is still open: the export was cut short.
        if exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string"):
            raise HarError(f"truncated: the JSON ends at line {exc.lineno} column {exc.colno} inside an "
                           "unfinished value (was the export or the copy cut short?)", source=source) from exc
        raise HarError(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", source=source) from exc


def _what(raw: Any) -> tuple[str | None, str | None]:
    """Method and URL of an entry, as far as they can be read, for messages."""
    request = raw.get("request") if isinstance(raw, dict) else None
    if not isinstance(request, dict):
        return None, None
    method, url = request.get("method"), request.get("url")
    return (method if isinstance(method, str) and method else None), (url if isinstance(url, str) and url else None)


def _host_key(host: str) -> str:
    """A host as asked for, compared as the recording's hosts are named: lower-case
    ``name``, or ``name:port`` when the URL named a port other than its scheme's.

    >>> _host_key(" API.Example "), _host_key("localhost:3000")
    ('api.example', 'localhost:3000')
    """
    return host.strip().lower()


# ------------------------------------------------------------------ one entry
def _entry(index: int, raw: Any) -> _Parsed:
    if not isinstance(raw, dict):
        raise _Refused("not an object")
    request = raw.get("request")
    if not isinstance(request, dict):
        raise _Refused("no request")
    method = request.get("method")
    if not isinstance(method, str) or not method:
        raise _Refused("the request has no method")
    if not _TOKEN.match(method):
        raise _Refused(f"method {method!r} is not an HTTP method")
    if method.upper() in _TUNNEL_METHODS:
        raise _Refused(f"{method} opens a tunnel; there is no request to replay")
    url = request.get("url")
    if not isinstance(url, str) or not url:
        raise _Refused("the request has no url")
    host, target = _split_url(url)
    started = _started(raw.get("startedDateTime"))
    headers = _headers(request.get("headers", []))
    content, mime = _body(request.get("postData"))
    if mime and not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("Content-Type", mime))
    response = raw.get("response") if isinstance(raw.get("response"), dict) else {}
    operations = _graphql_operations(content) if content is not None else None
    write = method.upper() not in SAFE_METHODS and not (operations and operations == {OperationType.QUERY})
    planned = PlannedRequest(
        kind=f"{method} {_kind_path(target)}",
        method=method,
        path=target,
        expected=_expected(response.get("status")),
        graphql=operations is not None and not _recorded_graphql_errors(response),
        headers=tuple(headers),
        content=content,
    )
    return _Parsed(host, RecordedRequest(index, url, started, planned, write))


def _split_url(url: str) -> tuple[str, str]:
    """The host key and the request-target of an absolute http(s) URL.

    >>> _split_url("https://Example.com:443/a/../b?x=%7e&y=a b#frag")
    ('example.com', '/a/../b?x=%7e&y=a%20b')
    >>> _split_url("http://127.0.0.1:8080?q")
    ('127.0.0.1:8080', '/?q')
    """
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in _DEFAULT_PORTS:
        raise _Refused("not an absolute http(s) URL")
    try:
        parts = urlsplit(url)
        hostname, port = parts.hostname, parts.port
    except ValueError as exc:
        raise _Refused(f"the URL's host or port cannot be read ({exc})") from exc
    if not hostname:
        raise _Refused("the URL has no host")
    name = f"[{hostname}]" if ":" in hostname else hostname
    host = name if port in (None, _DEFAULT_PORTS[scheme]) else f"{name}:{port}"
    # The target as recorded: everything after the authority, up to the fragment.
    cut = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    target = rest[cut:].partition("#")[0]
    if not target.startswith("/"):
        target = "/" + target
    # What a browser would have percent-encoded on the wire (spaces, non-ASCII,
    # controls); everything else byte for byte.
    return host, "".join(c if "!" <= c <= "~" else quote(c, safe="") for c in target)


def _started(value: Any) -> datetime:
    if not isinstance(value, str) or not value:
        raise _Refused("no startedDateTime: the entry cannot be placed in time")
    try:
        started = datetime.fromisoformat(value)
    except ValueError as exc:
        raise _Refused(f"startedDateTime {value!r} is not an ISO 8601 time") from exc
    return started if started.tzinfo else started.replace(tzinfo=UTC)


def _headers(raw: Any) -> list[tuple[str, str]]:
    if not isinstance(raw, list):
        raise _Refused("request.headers is not a list")
    kept: list[tuple[str, str]] = []
    cookies: list[str] = []
    cookie_at: int | None = None
    cookie_name = "Cookie"
    hop_by_hop = set(DROPPED_HEADERS)
    pairs: list[tuple[str, str]] = []
    for i, header in enumerate(raw):
        if not (isinstance(header, dict) and isinstance(header.get("name"), str)
                and isinstance(header.get("value"), str)):
            raise _Refused(f"request.headers[{i}] is not a {{name, value}} pair of strings")
        name, value = header["name"].strip(), header["value"].strip()
        if name.lower() == "connection":  # it names further hop-by-hop headers
            hop_by_hop.update(t.strip().lower() for t in value.split(",") if t.strip())
        pairs.append((name, value))
    for name, value in pairs:
        lower = name.lower()
        if name.startswith(":") or lower in hop_by_hop or lower.startswith(_CONTROL_PREFIX):
            continue
        if not _TOKEN.match(name):
            raise _Refused(f"header name {name!r} cannot be sent")
        if _BAD_VALUE.search(value) or not _latin1(value):
            raise _Refused(f"header {name} has a value that cannot be sent (line breaks or non-Latin-1)")
        if lower == "cookie":  # HTTP/2 splits cookies over several headers; HTTP/1.1 wants one
            if cookie_at is None:
                cookie_at, cookie_name = len(kept), name
            cookies.append(value)
            continue
        kept.append((name, value))
    if cookie_at is not None:
        kept.insert(cookie_at, (cookie_name, "; ".join(cookies)))
    return kept


def _latin1(value: str) -> bool:
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _body(post: Any) -> tuple[bytes | None, str | None]:
    """The body's bytes and its recorded mimeType (None, None: no body)."""
    if post is None:
        return None, None
    if not isinstance(post, dict):
        raise _Refused("request.postData is not an object")
    mime = post.get("mimeType") if isinstance(post.get("mimeType"), str) else ""
    text, params = post.get("text"), post.get("params")
    if isinstance(text, str):
        if post.get("encoding") == "base64":
            try:
                return base64.b64decode(text, validate=True), mime or None
            except (binascii.Error, ValueError) as exc:
                raise _Refused("postData.text is not valid base64") from exc
        charset = _charset(mime)
        try:
            return text.encode(charset), mime or None
        except UnicodeEncodeError as exc:
            raise _Refused(f"postData.text cannot be encoded in its charset {charset}") from exc
    if isinstance(params, list) and mime.lower().startswith(_FORM):
        if not all(isinstance(p, dict) and isinstance(p.get("name"), str) for p in params):
            raise _Refused("postData.params are not {name, value} pairs")
        pairs = [(p["name"], str(p.get("value", ""))) for p in params]
        return urlencode(pairs).encode(_charset(mime)), mime
    raise _Refused("postData has no text: the body was not recorded")


def _charset(mime: str) -> str:
    """The charset a mimeType names, if Python knows it; else UTF-8.

    >>> _charset("text/plain; charset=ISO-8859-1"), _charset("application/json")
    ('iso8859-1', 'utf-8')
    """
    for param in mime.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            try:
                return codecs.lookup(value.strip().strip('"')).name
            except LookupError:
                break
    return "utf-8"


def _kind_path(target: str) -> str:
    """The first path segments, for the per-kind figures.

    >>> _kind_path("/api/titles/tt0000001/ratings?x=1"), _kind_path("/graphql"), _kind_path("/?a")
    ('/api/titles', '/graphql', '/')
    """
    segments = [s for s in target.partition("?")[0].split("/") if s]
    return "/" + "/".join(segments[:KIND_SEGMENTS])


def _expected(status: Any) -> frozenset[int]:
    """Statuses that are a correct answer to an entry recorded with ``status``.

    >>> sorted(_expected(201))[:2], len(_expected(201)), max(_expected(0))
    ([200, 201], 100, 499)
    """
    if isinstance(status, int) and 100 <= status <= 599:
        base = status // 100 * 100
        return frozenset(range(base, base + 100))
    return frozenset(range(100, 500))  # no status recorded: anything but a server error


def _graphql_operations(content: bytes) -> set[OperationType] | None:
    """The operation types a GraphQL request body would run; None when it is not one
    (not JSON with a ``query`` that parses as GraphQL).

    An operation that cannot be told apart (several, none named) counts as a
    mutation: it is never replayed as a read by guess.

    >>> _graphql_operations(b'{"query": "query Q { a }"}'), _graphql_operations(b'{"query": "cats"}')
    ({<OperationType.QUERY: 'query'>}, None)
    """
    try:
        body = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None
    batch = body if isinstance(body, list) else [body]
    if not batch or not all(isinstance(b, dict) and isinstance(b.get("query"), str) for b in batch):
        return None
    found: set[OperationType] = set()
    for b in batch:
        try:
            document = parse(b["query"])
        except GraphQLError:
            return None  # a "query" key that is not GraphQL: some other JSON body
        name = b.get("operationName")
        ops = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        chosen = [o for o in ops if name and o.name and o.name.value == name] if name else ops
        if len(chosen) != 1:
            found.add(OperationType.MUTATION)  # the server would refuse it; never guess it is a read
        else:
            found.add(chosen[0].operation)
    return found


def _recorded_graphql_errors(response: Mapping[str, Any]) -> bool:
    """Whether the recorded answer of a GraphQL request carried ``errors``."""
    content = response.get("content")
    if not isinstance(content, dict) or not isinstance(content.get("text"), str):
        return False
    text: str = content["text"]
    try:
        body = json.loads(base64.b64decode(text) if content.get("encoding") == "base64" else text)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return False
    answers = body if isinstance(body, list) else [body]
    return any(isinstance(a, dict) and a.get("errors") for a in answers)
