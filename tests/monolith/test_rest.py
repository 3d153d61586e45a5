"""Every read endpoint of the monolith's REST API against a seeded catalogue."""

from __future__ import annotations

from tests.monolith.conftest import TEST_PLAN, Live
from tests.monolith.helpers import query, scalar

TITLE_KEYS = {"id", "primary_title", "original_title", "kind", "start_year", "end_year", "runtime_minutes", "genres"}
VOLATILE = {"generated_at", "request_id"}


async def get(live: Live, path: str) -> tuple[int, dict]:
    async with live.http.get(live.url(path)) as resp:
        return resp.status, await resp.json()


async def test_healthz(live: Live) -> None:
    assert await get(live, "/healthz") == (200, {"status": "ok"})


async def test_title_list_pages_in_id_order(live: Live) -> None:
    status, first = await get(live, "/api/titles?limit=5")
    assert status == 200
    assert first["total"] == TEST_PLAN.titles and first["limit"] == 5 and first["offset"] == 0
    assert [t["id"] for t in first["items"]] == [f"tt{n:07d}" for n in range(1, 6)]
    assert set(first["items"][0]) == TITLE_KEYS
    _, second = await get(live, "/api/titles?limit=5&offset=5")
    assert second["items"][0]["id"] == "tt0000006"
    _, default = await get(live, "/api/titles")
    assert len(default["items"]) == 20
    _, tail = await get(live, f"/api/titles?offset={TEST_PLAN.titles - 2}")
    assert len(tail["items"]) == 2


async def test_title_list_filters(live: Live) -> None:
    status, body = await get(live, "/api/titles?genre=Drama&year_from=1990&year_to=2010&limit=100")
    assert status == 200
    expected = await scalar(
        live.database_url,
        "SELECT count(*) FROM titles WHERE ','||genres||',' LIKE '%,Drama,%' AND start_year BETWEEN 1990 AND 2010",
    )
    assert body["total"] == expected > 0
    for item in body["items"]:
        assert "Drama" in item["genres"] and 1990 <= item["start_year"] <= 2010
    _, none = await get(live, "/api/titles?genre=Nonexistent")
    assert none["total"] == 0 and none["items"] == []


async def test_one_title_has_volatile_fields(live: Live) -> None:
    status, a = await get(live, "/api/titles/tt0000001")
    _, b = await get(live, "/api/titles/tt0000001")
    assert status == 200 and set(a) == TITLE_KEYS | VOLATILE
    assert isinstance(a["genres"], list) and a["genres"]
    assert a["request_id"] != b["request_id"] and a["generated_at"] != b["generated_at"]
    assert {k: a[k] for k in TITLE_KEYS} == {k: b[k] for k in TITLE_KEYS}


async def test_request_id_header_matches_body(live: Live) -> None:
    async with live.http.get(live.url("/api/titles/tt0000003")) as resp:
        assert resp.headers["X-Request-Id"] == (await resp.json())["request_id"]


async def test_cast_in_billing_order(live: Live) -> None:
    status, body = await get(live, "/api/titles/tt0000004/cast")
    assert status == 200 and body["title_id"] == "tt0000004"
    orderings = [c["ordering"] for c in body["cast"]]
    assert orderings == list(range(1, len(orderings) + 1)) and orderings
    assert body["cast"][0]["category"] == "director"
    for member in body["cast"]:
        assert member["person_id"].startswith("nm") and member["name"]
        if member["category"] in ("actor", "actress"):
            assert isinstance(member["characters"], list) and member["characters"]
        else:
            assert member["characters"] is None


async def test_ratings_match_the_votes(live: Live) -> None:
    rows = await query(
        live.database_url,
        "SELECT title_id, count(*), sum(value) FROM votes GROUP BY title_id ORDER BY title_id LIMIT 3",
    )
    for title_id, count, total in rows:
        status, body = await get(live, f"/api/titles/{title_id}/ratings")
        assert status == 200
        assert body["num_votes"] == count and body["average_rating"] == total / count
        assert isinstance(body["average_rating"], float)


async def test_ratings_of_a_title_without_votes(live: Live) -> None:
    unrated = await scalar(
        live.database_url, "SELECT id FROM titles WHERE id NOT IN (SELECT title_id FROM ratings) ORDER BY id LIMIT 1"
    )
    status, body = await get(live, f"/api/titles/{unrated}/ratings")
    assert status == 200 and body["num_votes"] == 0 and body["average_rating"] is None


async def test_images_come_in_varying_order(live: Live) -> None:
    title_id = await scalar(
        live.database_url,
        "SELECT title_id FROM images WHERE title_id IS NOT NULL GROUP BY title_id HAVING count(*) = 3 LIMIT 1",
    )
    orders = set()
    for _ in range(20):
        status, body = await get(live, f"/api/titles/{title_id}/images")
        assert status == 200
        orders.add(tuple(i["id"] for i in body["images"]))
        assert all(set(i) == {"id", "url", "width", "height", "caption"} for i in body["images"])
    assert len({frozenset(o) for o in orders}) == 1  # the same images...
    assert len(orders) > 1  # ...in different orders


async def test_person(live: Live) -> None:
    status, body = await get(live, "/api/people/nm0000001")
    assert status == 200
    assert set(body) == {"id", "name", "birth_year", "death_year", "professions"} | VOLATILE
    assert isinstance(body["professions"], list) and body["professions"]


async def test_known_for_is_the_four_most_voted(live: Live) -> None:
    # The most credited person has more than four titles.
    person_id, n = (
        await query(
            live.database_url,
            "SELECT person_id, count(DISTINCT title_id) n FROM credits GROUP BY person_id ORDER BY n DESC LIMIT 1",
        )
    )[0]
    assert n > 4
    status, body = await get(live, f"/api/people/{person_id}/known-for")
    assert status == 200 and body["person_id"] == person_id
    ids = [t["id"] for t in body["titles"]]
    assert len(ids) == 4 == len(set(ids))
    expected = await query(
        live.database_url,
        "SELECT c.title_id FROM (SELECT DISTINCT title_id FROM credits WHERE person_id = :p) c "
        "LEFT JOIN ratings r ON r.title_id = c.title_id ORDER BY coalesce(r.num_votes, 0) DESC, c.title_id LIMIT 4",
        p=person_id,
    )
    assert ids == [r[0] for r in expected]
    assert set(body["titles"][0]) == {"id", "primary_title", "kind", "start_year"}


async def test_search_titles_and_people(live: Live) -> None:
    name = await scalar(live.database_url, "SELECT name FROM people ORDER BY id LIMIT 1")
    last = name.split()[-1]
    status, body = await get(live, f"/api/search?q={last.upper()}&limit=50")
    assert status == 200 and body["people"]
    assert all(last.lower() in p["name"].lower() for p in body["people"])
    word = (await scalar(live.database_url, "SELECT primary_title FROM titles ORDER BY id LIMIT 1")).split()[-1]
    _, found = await get(live, f"/api/search?q={word.lower()}&limit=3")
    assert 0 < len(found["titles"]) <= 3
    assert all(word.lower() in t["primary_title"].lower() for t in found["titles"])


async def test_search_treats_wildcards_literally(live: Live) -> None:
    status, body = await get(live, "/api/search?q=%25")  # '%'
    assert status == 200 and body["titles"] == [] and body["people"] == []
