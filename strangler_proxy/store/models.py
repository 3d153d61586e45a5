"""Tables of the results store (in the ``control`` database).

    result_buckets  one row per key and time bucket: verdict counts (``served``:
                    answered by the candidate, nothing compared; ``transient``:
                    a mismatch gone when asked again) and the
                    latency histograms of both sides (JSON bin-count arrays,
                    see :mod:`.histogram`), added to on conflict
    diff_paths      per key, bucket, path and kind: how often it differed
    samples         a bounded number of raw examples per key and path
                    (redacted, truncated bodies and the typed differences)
    noise           per key and path: how often it was explained as noise

A "key" is a route name or ``graphql:Type.field``. Times are Unix seconds:
``bucket_start`` an integer multiple of ``store.bucket_s``, ``at`` a float.
JSON columns are TEXT written with orjson so both dialects store the same bytes.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Float, Index, Integer, LargeBinary, MetaData, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from strangler_proxy.databases import NAMING_CONVENTION

KEY_LENGTH = 200
PATH_LENGTH = 500  # longer paths are cut (with a marker) before they are stored
SOURCE_LEARNED = "learned"
SOURCE_RULE = "rule"

# BigInteger ids autoincrement only as INTEGER on SQLite.
_Id = BigInteger().with_variant(Integer(), "sqlite")


class ResultsBase(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ResultBucket(ResultsBase):
    """Aggregates of one key over one time bucket."""

    __tablename__ = "result_buckets"

    key: Mapped[str] = mapped_column(String(KEY_LENGTH), primary_key=True)
    bucket_start: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    match: Mapped[int] = mapped_column(BigInteger, default=0)
    mismatch: Mapped[int] = mapped_column(BigInteger, default=0)
    candidate_error: Mapped[int] = mapped_column(BigInteger, default=0)
    legacy_error: Mapped[int] = mapped_column(BigInteger, default=0)
    skipped: Mapped[int] = mapped_column(BigInteger, default=0)
    # Served by the candidate, nothing compared (revision results_0002).
    served: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    # Mismatches that disappeared when both sides were asked again (revision results_0003).
    transient: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    legacy_latency: Mapped[str] = mapped_column(Text, default="[]")
    candidate_latency: Mapped[str] = mapped_column(Text, default="[]")

    __table_args__ = (Index("ix_result_buckets_bucket_start", "bucket_start"),)


class DiffPath(ResultsBase):
    """How often one path differed (by kind) for one key in one bucket."""

    __tablename__ = "diff_paths"

    key: Mapped[str] = mapped_column(String(KEY_LENGTH), primary_key=True)
    bucket_start: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    path: Mapped[str] = mapped_column(String(PATH_LENGTH), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (Index("ix_diff_paths_bucket_start", "bucket_start"),)


class Sample(ResultsBase):
    """One raw example, kept while it is among the newest of its key and path."""

    __tablename__ = "samples"

    id: Mapped[int] = mapped_column(_Id, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(KEY_LENGTH))
    path: Mapped[str] = mapped_column(String(PATH_LENGTH))  # the first differing path, or "<verdict>"
    at: Mapped[float] = mapped_column(Float)
    verdict: Mapped[str] = mapped_column(String(32))
    method: Mapped[str] = mapped_column(String(16), default="")
    target: Mapped[str] = mapped_column(Text, default="")
    legacy_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    candidate_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    legacy_latency_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    candidate_latency_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    differences: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of {kind,path,legacy,candidate}
    legacy_body: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    candidate_body: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    extra: Mapped[str] = mapped_column(Text, default="{}")  # JSON; sensitive headers redacted

    __table_args__ = (
        Index("ix_samples_key_path_at", "key", "path", "at"),
        Index("ix_samples_at", "at"),
    )


class NoisePath(ResultsBase):
    """A path whose differences are noise for one key (learned or by rule)."""

    __tablename__ = "noise"

    key: Mapped[str] = mapped_column(String(KEY_LENGTH), primary_key=True)
    path: Mapped[str] = mapped_column(String(PATH_LENGTH), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)
    source: Mapped[str] = mapped_column(String(16), default=SOURCE_LEARNED)
    last_seen: Mapped[float] = mapped_column(Float, default=0.0)


RESULTS_METADATA = ResultsBase.metadata
