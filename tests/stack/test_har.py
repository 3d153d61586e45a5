"""Reading a HAR recording into a replay: what each entry would send, when, and
which entries are refused and why (pure: nothing is sent here)."""

from __future__ import annotations

import base64
import doctest
import json
from types import ModuleType

import pytest

from strangler_proxy.errors import HarError
from strangler_proxy.stack import har as har_module
from strangler_proxy.stack import traffic as traffic_module
from strangler_proxy.stack.har import SKIPPED_INVALID, SKIPPED_OTHER_HOST, Recording, Replay, parse_har
from tests.stack.harfiles import BROWSER_VISIT, HOST, OTHER_HOSTS, READS, VOTE_BODY, WRITES, entry, har

UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"


def _visit(**kwargs: str) -> Recording:
    return parse_har(BROWSER_VISIT.read_bytes(), source="visit.har", **kwargs)


def test_a_browser_recording_reads_as_its_hosts_requests_in_order() -> None:
    recording = _visit()
    assert recording.entries == 8 and recording.host == HOST
    assert recording.hosts == {HOST: 6, "fonts.example.net": 1, "stats.example.org": 1}
    got = [(r.entry, r.request.method, r.request.path) for r in recording.requests]
    assert got == sorted([(i, m, p) for i, m, p, _ in READS + WRITES])
    assert {r.entry for r in recording.requests if r.write} == {i for i, *_ in WRITES}
    # The GraphQL POST runs a query: a read, and an answer with "errors" is an error.
    graphql = next(r for r in recording.requests if r.request.path == "/graphql")
    assert not graphql.write and graphql.request.graphql
    # Entries on other hosts are refused, each named by index and URL, with the way to replay them.
    assert [(p.entry, p.url, p.reason) for p in recording.problems] == [
        (i, url, SKIPPED_OTHER_HOST) for i, url in OTHER_HOSTS
    ]
    fonts = recording.problems[0]
    assert str(fonts).startswith(f"entry 1 (GET {OTHER_HOSTS[0][1]}): to host fonts.example.net, not {HOST}")
    assert "--host fonts.example.net" in str(fonts)


def test_headers_as_recorded_minus_pseudo_hop_by_hop_host_and_length() -> None:
    first, _search, vote, *_ = _visit().requests
    # HTTP/2 pseudo headers gone, the two cookie headers one, everything else in order.
    assert first.request.headers == (
        ("accept", "application/json"),
        ("accept-encoding", "gzip, deflate"),
        ("accept-language", "en-GB,en;q=0.9"),
        ("cookie", "session=s3cr3t-session; theme=dark"),
        ("priority", "u=1, i"),
        ("referer", "https://films.example.com/title/tt0000001"),
        ("sec-ch-ua", '"Chromium";v="124", "Google Chrome";v="124", "Not-A.Brand";v="99"'),
        ("sec-ch-ua-mobile", "?0"),
        ("sec-ch-ua-platform", '"Linux"'),
        ("sec-fetch-dest", "empty"),
        ("sec-fetch-mode", "cors"),
        ("sec-fetch-site", "same-origin"),
        ("user-agent", UA),
    )
    # The recorded (and here wrong) content-length is not kept: the body decides it.
    assert vote.request.content == VOTE_BODY
    assert [n for n, _ in vote.request.headers] == ["accept", "authorization", "content-type", "origin", "user-agent"]
    assert dict(vote.request.headers)["authorization"] == "Bearer eyJhbGciOiJIUzI1NiJ9.demo.sig"

    mixed = parse_har(har(entry("GET", "http://api.example/x", headers=[
        (":authority", "api.example"), ("Host", "api.example"), ("Content-Length", "999"),
        ("Connection", "keep-alive, X-Trace"), ("X-Trace", "hop"), ("Keep-Alive", "timeout=5"), ("TE", "trailers"),
        ("Transfer-Encoding", "chunked"), ("Upgrade", "h2c"), ("Proxy-Authorization", "Basic cHJveHk="),
        ("Expect", "100-continue"), ("X-Strangler-Dry-Run", "1"), ("x-strangler-shadow", "1"),
        ("Authorization", "Bearer t"), ("X-Request-Id", "r1"), ("Cookie", "a=1"), ("Accept", "*/*"),
    ])))
    assert mixed.requests[0].request.headers == (
        ("Authorization", "Bearer t"), ("X-Request-Id", "r1"), ("Cookie", "a=1"), ("Accept", "*/*"),
    )


@pytest.mark.parametrize(("url", "target"), [
    ("https://api.example/a/../b//c?x=%7e&y=a+b&z=%zz#frag", "/a/../b//c?x=%7e&y=a+b&z=%zz"),
    ("https://api.example?only=query", "/?only=query"),
    ("https://api.example", "/"),
    ("https://api.example/films/Amélie?q=a b", "/films/Am%C3%A9lie?q=a%20b"),
    ("HTTPS://API.EXAMPLE:443/Case/Kept", "/Case/Kept"),
])
def test_the_target_is_the_recorded_path_and_query_byte_for_byte(url: str, target: str) -> None:
    recording = parse_har(har(entry("GET", url)))
    assert recording.host == "api.example" and recording.requests[0].request.path == target


def test_ports_make_hosts_apart_unless_they_are_the_schemes_default() -> None:
    recording = parse_har(har(
        entry("GET", "http://localhost:3000/a"), entry("GET", "http://localhost:3000/b"),
        entry("GET", "http://localhost/c"), entry("GET", "http://localhost:80/d"), entry("GET", "http://localhost:80/e"),
    ))
    assert recording.hosts == {"localhost": 3, "localhost:3000": 2}
    assert [r.request.path for r in recording.requests] == ["/c", "/d", "/e"]
    chosen = parse_har(har(entry("GET", "http://localhost:3000/a"), entry("GET", "http://localhost/c")),
                       host="LOCALHOST:3000")
    assert [r.request.path for r in chosen.requests] == ["/a"]
    assert "(--host)" in str(chosen.problems[0])


def test_bodies_text_base64_charset_and_form_params() -> None:
    recording = parse_har(har(
        entry("POST", "https://a.example/json", post={"mimeType": "application/json", "text": '{"v":"é"}'}),
        entry("POST", "https://a.example/latin", post={"mimeType": "text/plain; charset=ISO-8859-1", "text": "é"}),
        entry("PUT", "https://a.example/bin", post={"mimeType": "application/octet-stream", "encoding": "base64",
                                                    "text": base64.b64encode(b"\x00\xff\x10").decode()}),
        entry("POST", "https://a.example/form", post={"mimeType": "application/x-www-form-urlencoded",
                                                      "params": [{"name": "q", "value": "a b&c"},
                                                                 {"name": "n", "value": "1"}]}),
        entry("POST", "https://a.example/lost", post={"mimeType": "multipart/form-data; boundary=x", "params": []}),
        entry("POST", "https://a.example/empty", post={"mimeType": "text/plain", "text": ""}),
    ))
    bodies = {r.request.path: r.request.content for r in recording.requests}
    assert bodies == {
        "/json": '{"v":"é"}'.encode(), "/latin": b"\xe9", "/bin": b"\x00\xff\x10", "/form": b"q=a+b%26c&n=1",
        "/empty": b"",
    }
    # No Content-Type was recorded: the postData's mimeType becomes one.
    assert all(dict(r.request.headers)["Content-Type"] for r in recording.requests)
    assert all(r.write for r in recording.requests)
    [lost] = recording.problems
    assert lost.entry == 4 and lost.url == "https://a.example/lost" and "body was not recorded" in lost.message


def test_statuses_of_the_recorded_class_are_correct_answers() -> None:
    recording = parse_har(har(
        entry("GET", "https://a.example/ok", status=200), entry("POST", "https://a.example/made", status=201),
        entry("GET", "https://a.example/moved", status=304), entry("GET", "https://a.example/gone", status=404),
        entry("GET", "https://a.example/failed", status=None),
    ))
    expected = {r.request.path: r.request.expected for r in recording.requests}
    assert expected["/ok"] == expected["/made"] == frozenset(range(200, 300))
    assert expected["/moved"] == frozenset(range(300, 400)) and expected["/gone"] == frozenset(range(400, 500))
    # The browser got no answer (status 0): anything but a server error is fine.
    assert expected["/failed"] == frozenset(range(100, 500))


def test_graphql_reads_writes_and_recorded_errors() -> None:
    def gql(query: str, url: str, **extra: object) -> dict[str, object]:
        return entry("POST", url, post={"mimeType": "application/json", "text": json.dumps({"query": query, **extra})},
                     response_text='{"data": {}}')

    recording = parse_har(har(
        gql("query Q { a }", "https://a.example/graphql?read"),
        gql("mutation M { vote }", "https://a.example/graphql?mutation"),
        gql("query A { a } mutation B { b }", "https://a.example/graphql?named", operationName="A"),
        gql("query A { a } mutation B { b }", "https://a.example/graphql?unnamed"),
        entry("POST", "https://a.example/graphql?failed", response_text='{"errors": [{"message": "no"}]}',
              post={"mimeType": "application/json", "text": '{"query": "{ a }"}'}),
        entry("POST", "https://a.example/search", post={"mimeType": "application/json", "text": '{"query": "cats"}'}),
    ))
    seen = {r.request.path.partition("?")[2] or r.request.path: (r.write, r.request.graphql)
            for r in recording.requests}
    assert seen == {
        "read": (False, True),
        "mutation": (True, True),
        "named": (False, True),  # the operation it names is a query
        "unnamed": (True, True),  # which one runs cannot be told: never guessed to be a read
        "failed": (False, False),  # recorded with errors: an answer with errors is not a new failure
        "/search": (True, False),  # a "query" key that is not GraphQL
    }


def test_firefox_times_with_offsets_and_entries_out_of_order() -> None:
    entries = [entry("GET", "https://a.example/second", at=0.5), entry("GET", "https://a.example/first", at=0.0)]
    entries[0]["startedDateTime"] = "2024-05-14T11:21:07.912+02:00"  # 09:21:07.912Z
    entries[1]["startedDateTime"] = "2024-05-14T09:21:07.412"  # no zone: UTC
    replay = Replay(parse_har(har(*entries)))
    assert [(round(o, 3), r.path) for o, r in replay.due()] == [(0.0, "/first"), (0.5, "/second")]


def test_replay_offsets_scale_with_speed_and_writes_are_left_out_unless_asked() -> None:
    recording = _visit()
    reads = Replay(recording)
    assert [(round(o, 3), r.path) for o, r in reads.due()] == [(o, p) for _, _, p, o in READS]
    assert reads.planned == 4 and reads.end_s is None and reads.span_s == pytest.approx(1.0)
    assert reads.skipped == {"write": 2, "other host": 2, "invalid": 0}

    everything = Replay(recording, speed=4, include_writes=True)
    assert [(round(o, 4), r.path) for o, r in everything.due()] == sorted(
        (o / 4, p) for _, _, p, o in READS + WRITES
    )
    assert everything.skipped == {"write": 0, "other host": 2, "invalid": 0}
    assert {o for o, _ in Replay(recording, speed=0).due()} == {0.0}
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="speed"):
            Replay(recording, speed=bad)


def test_writes_alone_at_the_start_do_not_delay_the_reads() -> None:
    recording = parse_har(har(entry("POST", "https://a.example/w", at=0.0, post={"mimeType": "", "text": "x"}),
                              entry("GET", "https://a.example/r", at=0.4), entry("GET", "https://a.example/s", at=0.5)))
    assert [round(o, 3) for o, _ in Replay(recording).due()] == [0.0, 0.1]
    assert [round(o, 3) for o, _ in Replay(recording, include_writes=True).due()] == [0.0, 0.4, 0.5]


# ------------------------------------------------------------------ bad input
GOOD = entry("GET", "https://a.example/fine")


@pytest.mark.parametrize(("content", "says"), [
    (b"<!doctype html><html>Export failed</html>", "not JSON: Expecting value at line 1 column 1"),
    (BROWSER_VISIT.read_bytes()[:5000], "truncated: the JSON ends at line"),
    (b'{"log": {"version": "1.2", "entries": [{"request": {"url": "https://a.example/unfinish', "truncated"),
    (b"", "empty file"),
    (b"\xff\xfe{\x00", "not UTF-8 text"),
    (b"[]", "not a HAR file: no log.entries"),
    (b'{"log": {"version": "1.2"}}', "not a HAR file: no log.entries"),
    (b'{"log": {"version": "1.2", "entries": {}}}', "not a HAR file"),
    (b'{"traceEvents": []}', "not a HAR file"),
    (har(GOOD, version="2.0").encode(), "HAR version '2.0' is not supported (1.x is)"),
    (json.dumps({"log": {"version": 1.2, "entries": [GOOD]}}).encode(), "HAR version 1.2 is not supported"),
])
def test_a_file_that_cannot_be_replayed_at_all_raises_naming_it(content: bytes, says: str) -> None:
    with pytest.raises(HarError) as caught:
        parse_har(content, source="visit.har")
    assert str(caught.value).startswith("visit.har: ") and says in str(caught.value)


@pytest.mark.parametrize("version", ["1.2", "1.1", "1.3", "", None])
def test_every_1x_version_and_none_given_is_read(version: str | None) -> None:
    assert len(parse_har(("\ufeff" + har(GOOD, version=version)).encode()).requests) == 1


@pytest.mark.parametrize(("bad", "url", "says"), [
    ("not an entry", None, "not an object"),
    ({"startedDateTime": GOOD["startedDateTime"]}, None, "no request"),
    ({**GOOD, "request": {**GOOD["request"], "method": ""}}, "https://a.example/fine", "has no method"),
    ({**GOOD, "request": {"url": "https://a.example/m"}}, "https://a.example/m", "has no method"),
    ({**GOOD, "request": {**GOOD["request"], "method": "GE T"}}, "https://a.example/fine", "not an HTTP method"),
    ({**GOOD, "request": {"method": "GET"}}, None, "has no url"),
    (entry("GET", "ftp://a.example/file"), "ftp://a.example/file", "not an absolute http(s) URL"),
    (entry("GET", "/relative/only"), "/relative/only", "not an absolute http(s) URL"),
    (entry("GET", "https://a.example:99999/x"), "https://a.example:99999/x", "host or port cannot be read"),
    (entry("CONNECT", "https://a.example:443"), "https://a.example:443", "opens a tunnel"),
    ({**entry("GET", "https://a.example/t"), "startedDateTime": "yesterday"}, "https://a.example/t",
     "startedDateTime 'yesterday' is not an ISO 8601 time"),
    ({k: v for k, v in entry("GET", "https://a.example/t").items() if k != "startedDateTime"},
     "https://a.example/t", "no startedDateTime"),
    (entry("GET", "https://a.example/h", headers=[("X-Evil", "a\r\nInjected: 1")]), "https://a.example/h",
     "header X-Evil has a value that cannot be sent"),
    (entry("GET", "https://a.example/h", headers=[("X-Name", "日本")]), "https://a.example/h", "non-Latin-1"),
    (entry("GET", "https://a.example/h", headers=[("Bad Name", "v")]), "https://a.example/h",
     "header name 'Bad Name' cannot be sent"),
    ({**GOOD, "request": {**GOOD["request"], "headers": [{"name": "X"}]}}, "https://a.example/fine",
     "request.headers[0] is not a {name, value} pair"),
    (entry("PUT", "https://a.example/b", post={"mimeType": "x", "encoding": "base64", "text": "%%%"}),
     "https://a.example/b", "not valid base64"),
])
def test_each_bad_entry_is_named_and_refused_and_the_others_stay(bad: object, url: str | None, says: str) -> None:
    recording = parse_har(har(GOOD, bad, GOOD))  # type: ignore[arg-type]
    assert [r.entry for r in recording.requests] == [0, 2]
    [problem] = recording.problems
    assert (problem.entry, problem.url, problem.reason) == (1, url, SKIPPED_INVALID)
    assert says in problem.message
    assert str(problem).startswith("entry 1") and (url is None or f"{url}): " in str(problem))


def test_a_host_asked_for_that_the_recording_lacks_leaves_nothing() -> None:
    recording = _visit(host="nowhere.example")
    assert recording.host == "nowhere.example" and recording.requests == ()
    assert len(recording.problems) == 8 and {p.reason for p in recording.problems} == {SKIPPED_OTHER_HOST}
    assert Replay(recording).planned == 0 and list(Replay(recording).due()) == []


@pytest.mark.parametrize("module", [har_module, traffic_module], ids=lambda m: m.__name__)
def test_docstring_examples(module: ModuleType) -> None:
    failed, attempted = doctest.testmod(module)
    assert attempted > 0 and failed == 0
