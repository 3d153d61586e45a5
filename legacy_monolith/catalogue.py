"""Read queries over the catalogue, shared by REST and GraphQL.

Every function takes many ids and answers a dict keyed by id, so GraphQL can
batch a whole level of a query into one SQL statement and REST simply asks
for one id. Results are frozen records; presentation (JSON shapes, volatile
fields, shuffling) is the caller's business.

Reads are Core selects of plain columns (never ORM entities): building a
mapped object, its identity-map entry and instance state costs more than the
query on these hot paths, and the records are built from the rows anyway. So
every function takes an ORM session (REST) or a bare connection (GraphQL).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from legacy_monolith.models import Credit, Image, Person, Rating, Title
from strangler_proxy.databases import IDS_PARAM, rows_by_ids

KNOWN_FOR_SIZE = 4

Reader = AsyncSession | AsyncConnection  # anything with execute() and scalar()


def _split(joined: str) -> tuple[str, ...]:
    return tuple(part for part in joined.split(",") if part)


@dataclass(frozen=True, slots=True)
class TitleRecord:
    id: str
    primary_title: str
    original_title: str
    kind: str
    start_year: int | None
    end_year: int | None
    runtime_minutes: int | None
    genres: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "primary_title": self.primary_title,
            "original_title": self.original_title,
            "kind": self.kind,
            "start_year": self.start_year,
            "end_year": self.end_year,
            "runtime_minutes": self.runtime_minutes,
            "genres": list(self.genres),
        }

    def summary_json(self) -> dict[str, Any]:
        return {"id": self.id, "primary_title": self.primary_title, "kind": self.kind, "start_year": self.start_year}


@dataclass(frozen=True, slots=True)
class PersonRecord:
    id: str
    name: str
    birth_year: int | None
    death_year: int | None
    professions: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "birth_year": self.birth_year,
            "death_year": self.death_year,
            "professions": list(self.professions),
        }


@dataclass(frozen=True, slots=True)
class CastMember:
    title_id: str
    person_id: str
    name: str
    category: str
    characters: tuple[str, ...] | None
    ordering: int

    def to_json(self) -> dict[str, Any]:
        return {
            "person_id": self.person_id,
            "name": self.name,
            "category": self.category,
            "characters": list(self.characters) if self.characters is not None else None,
            "ordering": self.ordering,
        }


@dataclass(frozen=True, slots=True)
class RatingRecord:
    title_id: str
    average_rating: float | None  # None: no votes yet
    num_votes: int

    def to_json(self) -> dict[str, Any]:
        return {"title_id": self.title_id, "average_rating": self.average_rating, "num_votes": self.num_votes}

    @classmethod
    def empty(cls, title_id: str) -> RatingRecord:
        return cls(title_id=title_id, average_rating=None, num_votes=0)


@dataclass(frozen=True, slots=True)
class ImageRecord:
    id: str
    title_id: str | None
    person_id: str | None
    url: str
    width: int
    height: int
    caption: str | None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "url": self.url, "width": self.width, "height": self.height, "caption": self.caption}


@dataclass(frozen=True, slots=True)
class TitleFilter:
    """Filters of the title list; ``None`` means "any"."""

    genre: str | None = None
    year_from: int | None = None
    year_to: int | None = None


_TITLE_COLUMNS = (
    Title.id,
    Title.primary_title,
    Title.original_title,
    Title.kind,
    Title.start_year,
    Title.end_year,
    Title.runtime_minutes,
    Title.genres,
)


def _title(row: Any) -> TitleRecord:
    return TitleRecord(*row[:7], genres=_split(row[7]))


_PERSON_COLUMNS = (Person.id, Person.name, Person.birth_year, Person.death_year, Person.professions)
_IMAGE_COLUMNS = (Image.id, Image.title_id, Image.person_id, Image.url, Image.width, Image.height, Image.caption)


def _person(row: Any) -> PersonRecord:
    return PersonRecord(row[0], row[1], row[2], row[3], _split(row[4]))


# The by-ids lookups: Core statements over the tables (not the ORM classes) restricted by
# ``key IN :ids`` (an expanding parameter), built once -- SQLAlchemy's statement building and
# cache key are then not paid per request. Hot: GraphQL asks them once per query level.
_T, _P, _C, _R, _I = (m.__table__.c for m in (Title, Person, Credit, Rating, Image))
_TITLES_BY_IDS = select(*(_T[c.key] for c in _TITLE_COLUMNS)).where(_T.id.in_(bindparam(IDS_PARAM, expanding=True)))
_PEOPLE_BY_IDS = select(*(_P[c.key] for c in _PERSON_COLUMNS)).where(_P.id.in_(bindparam(IDS_PARAM, expanding=True)))
_CAST_OF = (
    select(_C.title_id, _C.person_id, _P.name, _C.category, _C.characters, _C.ordering)
    .join_from(Credit.__table__, Person.__table__, _P.id == _C.person_id)
    .where(_C.title_id.in_(bindparam(IDS_PARAM, expanding=True)))
    .order_by(_C.title_id, _C.ordering)
)
_RATINGS_OF = select(_R.title_id, _R.average_rating, _R.num_votes).where(_R.title_id.in_(bindparam(IDS_PARAM, expanding=True)))
_IMAGES_OF = (
    select(*(_I[c.key] for c in _IMAGE_COLUMNS)).where(_I.title_id.in_(bindparam(IDS_PARAM, expanding=True))).order_by(_I.id)
)


async def titles_by_ids(session: Reader, ids: Sequence[str]) -> dict[str, TitleRecord]:
    return {row[0]: _title(row) for row in await rows_by_ids(session, _TITLES_BY_IDS, ids)}


async def people_by_ids(session: Reader, ids: Sequence[str]) -> dict[str, PersonRecord]:
    return {row[0]: _person(row) for row in await rows_by_ids(session, _PEOPLE_BY_IDS, ids)}


async def list_titles(
    session: Reader, filters: TitleFilter, *, limit: int, offset: int
) -> tuple[list[TitleRecord], int]:
    """One page of titles in id order, and how many match in total."""
    conditions = []
    if filters.genre is not None:
        # genres is comma-joined; wrapping both sides in commas matches whole names only.
        conditions.append((literal(",") + Title.genres + literal(",")).like(f"%,{filters.genre},%"))
    if filters.year_from is not None:
        conditions.append(Title.start_year >= filters.year_from)
    if filters.year_to is not None:
        conditions.append(Title.start_year <= filters.year_to)
    page = select(*_TITLE_COLUMNS).where(*conditions).order_by(Title.id).limit(limit).offset(offset)
    total = await session.scalar(select(func.count()).select_from(Title).where(*conditions))
    return [_title(row) for row in await session.execute(page)], int(total or 0)


async def cast_of(session: Reader, title_ids: Sequence[str]) -> dict[str, list[CastMember]]:
    out: dict[str, list[CastMember]] = defaultdict(list)
    for title_id, person_id, name, category, characters, ordering in await rows_by_ids(session, _CAST_OF, title_ids):
        chars = tuple(json.loads(characters)) if characters else None
        out[title_id].append(CastMember(title_id, person_id, name, category, chars, ordering))
    return out


async def ratings_of(session: Reader, title_ids: Sequence[str]) -> dict[str, RatingRecord]:
    """Aggregates of the titles that have votes (titles without are absent)."""
    return {row[0]: RatingRecord(row[0], row[1], row[2]) for row in await rows_by_ids(session, _RATINGS_OF, title_ids)}


async def images_of(session: Reader, title_ids: Sequence[str]) -> dict[str, list[ImageRecord]]:
    out: dict[str, list[ImageRecord]] = defaultdict(list)
    for row in await rows_by_ids(session, _IMAGES_OF, title_ids):
        out[row[1] or ""].append(ImageRecord(*row))
    return out


async def known_for(session: Reader, person_ids: Sequence[str]) -> dict[str, list[TitleRecord]]:
    """Each person's (at most) four most-voted titles; ties by title id."""
    # One row per (person, title) even when someone both wrote and directed it.
    pairs = (
        select(Credit.person_id, Credit.title_id)
        .where(Credit.person_id.in_(set(person_ids)))
        .group_by(Credit.person_id, Credit.title_id)
        .subquery()
    )
    votes = func.coalesce(Rating.num_votes, 0)
    ranked = (
        select(
            pairs.c.person_id,
            pairs.c.title_id,
            func.row_number()
            .over(partition_by=pairs.c.person_id, order_by=(votes.desc(), pairs.c.title_id))
            .label("rank"),
        )
        .join(Rating, Rating.title_id == pairs.c.title_id, isouter=True)
        .subquery()
    )
    stmt = (
        select(ranked.c.person_id, ranked.c.rank, *_TITLE_COLUMNS)
        .join(Title, Title.id == ranked.c.title_id)
        .where(ranked.c.rank <= KNOWN_FOR_SIZE)
        .order_by(ranked.c.person_id, ranked.c.rank)
    )
    out: dict[str, list[TitleRecord]] = defaultdict(list)
    for row in await session.execute(stmt):
        out[row[0]].append(_title(row[2:]))
    return out


async def search(session: Reader, text: str, *, limit: int) -> tuple[list[TitleRecord], list[PersonRecord]]:
    """Titles and people whose name contains ``text`` (case-insensitive);
    most-voted titles first, people by name."""
    pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    title_stmt = (
        select(*_TITLE_COLUMNS)
        .join(Rating, Rating.title_id == Title.id, isouter=True)
        .where(or_(Title.primary_title.ilike(pattern, escape="\\"), Title.original_title.ilike(pattern, escape="\\")))
        .order_by(func.coalesce(Rating.num_votes, 0).desc(), Title.id)
        .limit(limit)
    )
    people_stmt = (
        select(*_PERSON_COLUMNS)
        .where(Person.name.ilike(pattern, escape="\\"))
        .order_by(Person.name, Person.id)
        .limit(limit)
    )
    titles = [_title(row) for row in await session.execute(title_stmt)]
    people = [_person(row) for row in await session.execute(people_stmt)]
    return titles, people
