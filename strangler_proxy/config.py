"""``strangler.yaml``: read once, validated whole, frozen.

:func:`load_config` reads the YAML once keeping each key's line (yaml_lines.py:
duplicate keys refused, YAML errors located), validates it with pydantic, and raises :class:`~strangler_proxy.errors.ConfigErrors` naming the
file, the line and the field of every problem. Nothing partial ever escapes: a
bad file is refused whole and the caller keeps whatever config it had.

    >>> cfg = load_config_text('''
    ... upstreams:
    ...   legacy: {url: "http://127.0.0.1:8001"}
    ... ''')
    >>> cfg.proxy.default_upstream
    'legacy'
"""

from __future__ import annotations

import os
import re
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from strangler_proxy.errors import ConfigError, ConfigErrors
from strangler_proxy.header_rules import rule_problem
from strangler_proxy.jsonpath import parse_path
from strangler_proxy.yaml_lines import field_name, line_for, read_yaml

# ---------------------------------------------------------------- defaults
DEFAULT_PROXY_PORT = 8080
DEFAULT_ADMIN_PORT = 9901
DEFAULT_CONNECT_TIMEOUT_S = 2.0
DEFAULT_UPSTREAM_TIMEOUT_S = 30.0
DEFAULT_MAX_CONNECTIONS = 256
DEFAULT_SHADOW_QUEUE = 1000
DEFAULT_SHADOW_WORKERS = 32
DEFAULT_SHADOW_TIMEOUT_S = 5.0
DEFAULT_SHADOW_BODY_LIMIT = 1024 * 1024
DEFAULT_BUCKET_S = 60  # width of a results-store aggregate bucket
# A shadowed mismatch on a read is asked again on both sides this long after
# (compare.recheck_after_s): just above the p99 of the demo's outbox sync lag
# (strangler_sync_lag_seconds, about 0.1 s with its 50 ms poll), so a read
# that raced a write has been synced by then. See docs/diff.md "Rechecks".
DEFAULT_RECHECK_AFTER_S = 0.5
DEFAULT_RECHECK_BUDGET_PER_S = 50.0  # rechecks started per second, per proxy replica
DEFAULT_RECHECK_MAX_INFLIGHT = 100  # rechecks waiting or running at once
# Client connections (proxy.limits); see docs/proxy.md "Client limits".
DEFAULT_HEADER_TIMEOUT_S = 10.0
# nginx's default, and longer than the 60 s idle timeout of the usual load
# balancers (AWS ALB, GCP): the balancer closes an idle connection first, so it
# never sends a request onto one the proxy is closing at that moment.
DEFAULT_KEEPALIVE_TIMEOUT_S = 75.0
DEFAULT_CLIENT_CONNECTIONS = 10_000
# Apache's LimitRequestLine / LimitRequestFieldSize and aiohttp's own defaults:
# nothing the proxy accepted before these settings existed is refused now.
DEFAULT_MAX_LINE_SIZE = 8190
DEFAULT_MAX_FIELD_SIZE = 8190
DEFAULT_MAX_HEADERS = 128
DEFAULT_SERVER_HEADER = "strangler"
ADMIN_TOKEN_ENV = "STRANGLER_ADMIN_TOKEN"

# Route names never contain a dot, so they cannot be confused with GraphQL
# fields ("Type.field") in flips, the state store and reports.
_ROUTE_NAME = r"[a-z0-9][a-z0-9_\-]*"


class Mode(str, Enum):
    LEGACY = "legacy"
    SHADOW = "shadow"
    CANARY = "canary"
    EXTRACTED = "extracted"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Listen(_Frozen):
    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_PROXY_PORT, ge=0, le=65535)


class ProxyLimits(_Frozen):
    """What one client may hold of the proxy: the time to send a request head,
    idle keep-alive time, open connections, head sizes; and the ``Server``
    name on the proxy's own answers (an upstream's ``Server`` passes untouched).

    Read when the proxy starts listening; a reload does not change them.

        >>> ProxyLimits(header_timeout_s=2).keepalive_timeout_s
        75.0
    """

    # A complete request head (request line + headers) must arrive within this
    # from the connection's start, or from its first byte on a kept-alive
    # connection; else 408 (bytes came) or a silent close (none came).
    header_timeout_s: float = Field(default=DEFAULT_HEADER_TIMEOUT_S, gt=0, le=3600)
    # A kept-alive connection with no request under way is closed after this.
    keepalive_timeout_s: float = Field(default=DEFAULT_KEEPALIVE_TIMEOUT_S, gt=0, le=3600)
    # Open client connections; past it a new one gets a 503 and is closed.
    max_connections: int = Field(default=DEFAULT_CLIENT_CONNECTIONS, ge=1, le=1_000_000)
    max_line_size: int = Field(default=DEFAULT_MAX_LINE_SIZE, ge=256, le=1 << 20)  # request-target; else 414
    max_field_size: int = Field(default=DEFAULT_MAX_FIELD_SIZE, ge=256, le=1 << 20)  # name + value; else 431
    max_headers: int = Field(default=DEFAULT_MAX_HEADERS, ge=1, le=10_000)  # header fields; else 431
    # null: no Server header on the proxy's own answers.
    server_header: str | None = DEFAULT_SERVER_HEADER

    @field_validator("server_header")
    @classmethod
    def _header_value(cls, v: str | None) -> str | None:
        # It goes verbatim into every error page's head: no line breaks, nothing invisible.
        if v is not None and (len(v) > 200 or not re.fullmatch(r"[!-~]+(?: [!-~]+)*", v)):
            raise ValueError(f"{v!r}: a name of visible ASCII characters and single spaces, at most 200, "
                             "such as 'strangler'; null for no Server header")
        return v


class ProxySettings(_Frozen):
    listen: Listen = Listen()
    admin: Listen = Listen(port=DEFAULT_ADMIN_PORT)
    # name -> token. The token's name is what the audit log records as "who".
    admin_tokens: dict[str, str] = Field(default_factory=dict)
    default_upstream: str = "legacy"
    access_log: bool = True
    # Where flips propagate from when several replicas share one database.
    state_poll_interval_s: float = Field(default=0.5, gt=0, le=60)
    limits: ProxyLimits = ProxyLimits()


_HTTP_URL_RE = re.compile(r"^https?://[^/\s]+(/.*)?$")
_ENV_REF_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
DEFAULT_ZONE = "default"


def _http_url(v: str) -> str:
    if not _HTTP_URL_RE.match(v):
        raise ValueError("must be an http:// or https:// URL such as http://127.0.0.1:8001")
    return v.rstrip("/")


class EndpointConfig(_Frozen):
    """One instance of an upstream (docs/config.md "upstreams")."""

    url: str
    zone: str = Field(default=DEFAULT_ZONE, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    priority: int = Field(default=0, ge=0, le=16)  # 0 is the best; traffic spills to 1, 2, ... when 0 is unhealthy
    weight: int = Field(default=1, ge=1, le=1000)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _http_url(v)


class HealthCheckConfig(_Frozen):
    """Active health checks: GET ``path`` on every endpoint every ``interval_s``."""

    path: str
    interval_s: float = Field(default=5.0, gt=0, le=3600)
    timeout_s: float = Field(default=1.0, gt=0, le=60)
    healthy_after: int = Field(default=2, ge=1, le=100)  # consecutive 2xx to become healthy again
    unhealthy_after: int = Field(default=3, ge=1, le=100)  # consecutive failures to become unhealthy

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("must be a path starting with /, e.g. /healthz")
        return v


class OutlierConfig(_Frozen):
    """Passive outlier detection: consecutive failures eject an endpoint for a growing time."""

    consecutive_failures: int = Field(default=5, ge=1, le=1000)  # connect failures or 5xx in a row
    base_ejection_s: float = Field(default=10.0, gt=0, le=3600)  # doubled each time it is ejected again
    max_ejection_s: float = Field(default=300.0, gt=0, le=86400)
    max_ejected_percent: float = Field(default=50.0, ge=0, le=100)  # never eject more of the pool than this


class RetryConfig(_Frozen):
    """Retries on another endpoint, bounded by a budget so they cannot amplify an outage."""

    budget_percent: float = Field(default=20.0, ge=0, le=100)  # retries <= this share of requests...
    window_s: float = Field(default=10.0, gt=0, le=600)  # ...over this window
    min_per_s: float = Field(default=3.0, ge=0)  # always allowed, so a quiet upstream can still retry


class HeaderRules(_Frozen):
    """Request headers an upstream needs changed: ``set`` (values may name ``${ENV_VAR}``) and ``remove``."""

    set: dict[str, str] = Field(default_factory=dict)
    remove: tuple[str, ...] = ()

    @field_validator("set")
    @classmethod
    def _env_refs(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            if problem := rule_problem(name):
                raise ValueError(problem)
            if any(c in value for c in "\r\n\0"):
                raise ValueError(f"{name}: a header value is one line")
            for ref in _ENV_REF_RE.findall(value):
                if ref not in os.environ:
                    raise ValueError(f"{name}: the environment variable {ref} is not set")
                if any(c in os.environ[ref] for c in "\r\n\0"):
                    raise ValueError(f"{name}: the environment variable {ref} holds a line break")
        return v

    @field_validator("remove")
    @classmethod
    def _removable(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            if problem := rule_problem(name):
                raise ValueError(problem)
        return v

    def resolved(self) -> tuple[tuple[str, str], ...]:
        """``set`` with every ``${VAR}`` replaced from the environment (read when the config loads)."""
        return tuple((k, _ENV_REF_RE.sub(lambda m: os.environ.get(m.group(1), ""), v)) for k, v in self.set.items())


class UpstreamConfig(_Frozen):
    url: str | None = None  # shorthand for one endpoint
    endpoints: tuple[EndpointConfig, ...] = ()
    connect_timeout_s: float = Field(default=DEFAULT_CONNECT_TIMEOUT_S, gt=0)
    timeout_s: float = Field(default=DEFAULT_UPSTREAM_TIMEOUT_S, gt=0)
    max_connections: int = Field(default=DEFAULT_MAX_CONNECTIONS, ge=1)  # per endpoint
    # "preserve": send the client's Host; "upstream": the upstream URL's host.
    host_header: Literal["preserve", "upstream"] = "preserve"
    health: HealthCheckConfig | None = None
    outlier: OutlierConfig = OutlierConfig()
    retries: RetryConfig = RetryConfig()
    # Below this share of healthy endpoints a priority level spills traffic to the next.
    failover_threshold: float = Field(default=0.7, gt=0, le=1)
    headers: HeaderRules = HeaderRules()

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return None if v is None else _http_url(v)

    @model_validator(mode="after")
    def _one_way(self, info: ValidationInfo) -> UpstreamConfig:
        if self.url is not None and self.endpoints:
            raise ValueError("give url (one endpoint) or endpoints (several), not both")
        # Neither: the cells give it (load_config_text checks, at the upstream's line).
        if self.url is None and not self.endpoints and not (info.context or {}).get("defer_references"):
            raise ValueError("give url (one endpoint) or endpoints (several)")
        # load_config_text reports these itself, at the line of the endpoint concerned.
        if not (info.context or {}).get("defer_references") and (problems := self.endpoint_problems()):
            raise ValueError("; ".join(f"{field_name(loc)}: {msg}" for loc, msg in problems))
        return self

    def endpoint_problems(self) -> list[tuple[tuple[Any, ...], str]]:
        """An endpoint listed twice, a gap between priorities: each located at its endpoint."""
        problems: list[tuple[tuple[Any, ...], str]] = []
        first: dict[str, int] = {}
        for i, e in enumerate(self.endpoints):
            if e.url in first:
                problems.append((("endpoints", i, "url"), f"{e.url} is listed twice (also endpoints[{first[e.url]}])"))
            first.setdefault(e.url, i)
        levels = sorted({e.priority for e in self.endpoints})
        gap = next((level for n, level in enumerate(levels) if level != n), None)
        if gap is not None:
            i = next(i for i, e in enumerate(self.endpoints) if e.priority == gap)
            problems.append((("endpoints", i, "priority"),
                             f"priorities are 0, 1, 2, ... without a gap (traffic spills to the next); got {levels}"))
        return problems

    @property
    def endpoint_list(self) -> tuple[EndpointConfig, ...]:
        """Every endpoint; ``url:`` is one endpoint in the default zone."""
        return self.endpoints or (EndpointConfig(url=self.url or ""),)

    @property
    def primary_url(self) -> str:
        """The first endpoint's URL (where ``strangler up`` starts an app of this upstream)."""
        return self.endpoint_list[0].url


class CompareConfig(_Frozen):
    """Rules of the diff engine. Route-level rules are merged over the global ones
    (lists are concatenated, mappings merged, scalars overridden when set)."""

    ignore: tuple[str, ...] = ()  # JSON paths with wildcards: $..request_id, $.items[*].updated_at
    abs_tolerance: float | None = Field(default=None, ge=0)
    rel_tolerance: float | None = Field(default=None, ge=0)
    unordered: tuple[str, ...] = ()  # list paths compared as multisets
    list_keys: dict[str, str] = Field(default_factory=dict)  # list path -> key field
    normalise: dict[str, tuple[Literal["strip", "lower", "collapse-space"], ...]] = Field(default_factory=dict)
    headers: tuple[str, ...] | None = None  # allowlist compared; default Content-Type
    redact_headers: tuple[str, ...] = ()  # besides Authorization, Cookie, Set-Cookie
    redact_paths: tuple[str, ...] = ()  # JSON paths whose values never reach the store
    # Query parameters whose values are blanked in the access log, samples and reports,
    # besides token, access_token, api_key, password, secret, sig (any case).
    redact_query: tuple[str, ...] = ()
    noise_sample_rate: float | None = Field(default=None, ge=0, le=1)
    # A mismatch on a read (GET/HEAD/OPTIONS, GraphQL field shadows) is asked
    # again on both sides after this many seconds; agreeing then makes it
    # "transient" (replication lag). None: DEFAULT_RECHECK_AFTER_S; 0: never.
    recheck_after_s: float | None = Field(default=None, ge=0, le=60)

    @field_validator("redact_query")
    @classmethod
    def _query_names(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            if not name or any(c in name for c in "=&;#? "):
                raise ValueError(f"{name!r}: a query parameter name, such as session_key")
        return v

    @model_validator(mode="after")
    def _patterns_compile(self) -> CompareConfig:
        # Bad JSON paths are refused when the file loads, not at the first compare.
        for texts in (self.ignore, self.unordered, self.list_keys, self.normalise, self.redact_paths):
            for text in texts:
                try:
                    parse_path(text)
                except ConfigError as exc:
                    raise ValueError(exc.message) from exc
        return self

    def merged(self, over: CompareConfig | None) -> CompareConfig:
        if over is None:
            return self
        return CompareConfig(
            ignore=self.ignore + over.ignore,
            abs_tolerance=over.abs_tolerance if over.abs_tolerance is not None else self.abs_tolerance,
            rel_tolerance=over.rel_tolerance if over.rel_tolerance is not None else self.rel_tolerance,
            unordered=self.unordered + over.unordered,
            list_keys={**self.list_keys, **over.list_keys},
            normalise={**self.normalise, **over.normalise},
            headers=over.headers if over.headers is not None else self.headers,
            redact_headers=self.redact_headers + over.redact_headers,
            redact_paths=self.redact_paths + over.redact_paths,
            redact_query=self.redact_query + over.redact_query,
            noise_sample_rate=(
                over.noise_sample_rate if over.noise_sample_rate is not None else self.noise_sample_rate
            ),
            recheck_after_s=over.recheck_after_s if over.recheck_after_s is not None else self.recheck_after_s,
        )


class GuardrailConfig(_Frozen):
    """Automatic rollback for canary/extracted: a sliding window of results."""

    enabled: bool = True
    window: int = Field(default=200, ge=1)  # last N results
    window_s: float = Field(default=300.0, gt=0)  # ...no older than this
    min_samples: int = Field(default=20, ge=1)
    max_error_rate: float = Field(default=0.10, ge=0, le=1)
    max_mismatch_rate: float = Field(default=0.10, ge=0, le=1)


class ReadinessConfig(_Frozen):
    min_samples: int = Field(default=100, ge=1)
    max_mismatch_rate: float = Field(default=0.01, ge=0, le=1)  # on the Wilson upper bound
    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    latency_factor: float = Field(default=1.5, gt=0)  # candidate p99 <= factor * legacy p99...
    # ...or at most this much over legacy's: 3 ms beside a 2-ms legacy is not a slow candidate.
    latency_slack_ms: float = Field(default=10.0, ge=0, le=60_000)


class PromotionConfig(_Frozen):
    """Progressive promotion: step the canary percent up while ready."""

    steps: tuple[int, ...] = (1, 5, 25, 50, 100)
    interval_s: float = Field(default=600, gt=0)


_PARTITION_RE = re.compile(r"^(path|header|query|cookie|arg|key):[A-Za-z0-9_\-]+$")


class RouteConfig(_Frozen):
    name: str = Field(pattern=rf"^{_ROUTE_NAME}$")
    path: str
    methods: tuple[str, ...] = ("GET", "HEAD")
    headers: dict[str, str] = Field(default_factory=dict)  # header match (exact value)
    legacy: str | None = None  # upstream name; default: proxy.default_upstream
    target: str | None = None
    rewrite: str | None = None  # target path template, e.g. /v1/ratings/{id}
    mode: Mode = Mode.LEGACY
    percent: int = Field(default=0, ge=0, le=100)  # whole percents, as the flip takes them
    partition_key: str | None = None  # path:id, header:X-Customer-Id, query:q, cookie:sid
    fallback: bool = False  # safe methods fall back to legacy when the target fails
    reverse_shadow: bool = False  # in extracted, mirror to legacy and compare
    sample_rate: float = Field(default=1.0, ge=0, le=1)
    shadow_writes: Literal["never", "dry-run"] = "never"
    # A canary of a write route makes two databases writers of the same data;
    # writes normally move shadow (dry-run) -> extracted in one step. Opt in
    # only when the service reconciles concurrent writers itself.
    canary_writes: bool = False
    compare: CompareConfig | None = None
    guardrails: GuardrailConfig | None = None
    readiness: ReadinessConfig | None = None
    promotion: PromotionConfig | None = None

    @field_validator("path")
    @classmethod
    def _template(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("must start with '/'")
        for seg in v.split("/")[1:]:
            if "{" in seg or "}" in seg:
                if not re.fullmatch(r"\{[A-Za-z_][A-Za-z0-9_]*\}|\{\*[A-Za-z_][A-Za-z0-9_]*\}", seg):
                    raise ValueError(f"segment {seg!r}: a variable is a whole segment like {{id}} or {{*rest}}")
        return v

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        allowed = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
        out = tuple(m.upper() for m in v)
        bad = [m for m in out if m not in allowed]
        if bad:
            raise ValueError(f"unknown method(s) {bad}; allowed: {sorted(allowed)}")
        if not out:
            raise ValueError("at least one method")
        return out

    @field_validator("partition_key")
    @classmethod
    def _partition(cls, v: str | None) -> str | None:
        if v is not None and not _PARTITION_RE.match(v):
            raise ValueError("must be path:NAME, header:NAME, query:NAME or cookie:NAME")
        return v

    @model_validator(mode="after")
    def _target_needed(self) -> RouteConfig:
        if self.mode != Mode.LEGACY and not self.target:
            raise ValueError(f"mode {self.mode.value!r} needs a 'target' upstream")
        if self.mode == Mode.CANARY and (problem := write_canary_problem(self)):
            raise ValueError(problem)
        if self.partition_key and self.partition_key.startswith("path:"):
            var = self.partition_key.split(":", 1)[1]
            if "{" + var + "}" not in self.path:
                raise ValueError(f"partition_key {self.partition_key!r}: the path has no {{{var}}}")
        return self


WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def write_canary_problem(route: RouteConfig) -> str | None:
    """Why ``route`` may not be in canary, or None. Checked on load and on every flip."""
    writes = sorted(WRITE_METHODS.intersection(route.methods))
    if writes and not route.canary_writes:
        return (
            f"canary splits the writes ({', '.join(writes)}) between two databases; move writes "
            "shadow (shadow_writes: dry-run) -> extracted in one step, or set canary_writes: true "
            "if the service reconciles concurrent writers (docs/services.md)"
        )
    return None


class GraphQLBackend(_Frozen):
    upstream: str
    path: str = "/graphql"
    sdl_file: str | None = None  # for backends that cannot be asked for _service { sdl }


class FieldConfig(_Frozen):
    target: str  # backend name
    mode: Mode = Mode.LEGACY
    percent: int = Field(default=0, ge=0, le=100)  # whole percents, as the flip takes them
    partition_key: str | None = None  # key:id (entity key), arg:id, header:X-Customer-Id
    reverse_shadow: bool = False
    sample_rate: float = Field(default=1.0, ge=0, le=1)
    compare: CompareConfig | None = None
    guardrails: GuardrailConfig | None = None
    readiness: ReadinessConfig | None = None

    @field_validator("partition_key")
    @classmethod
    def _partition(cls, v: str | None) -> str | None:
        if v is not None and not _PARTITION_RE.match(v):
            raise ValueError("must be key:NAME, arg:NAME or header:NAME")
        return v


class GraphQLConfig(_Frozen):
    enabled: bool = False
    path: str = "/graphql"
    legacy_backend: str = "legacy"
    backends: dict[str, GraphQLBackend] = Field(default_factory=dict)
    fields: dict[str, FieldConfig] = Field(default_factory=dict)  # "Type.field" -> ownership
    # Field shadows of one window go to a backend as one _entities request (0: one per client request).
    shadow_batch_window_s: float = Field(default=0.05, ge=0, le=1)
    shadow_batch_size: int = Field(default=100, ge=1)  # ... or as soon as this many requests wait
    # At start, how long to keep asking a backend that does not answer yet for its SDL.
    sdl_wait_s: float = Field(default=10.0, ge=0)
    # Browser origins allowed to call the gateway (CORS), e.g. a GraphQL IDE's; "*" for any. None by default.
    cors_origins: list[str] = Field(default_factory=list)
    # Tell every client which backend answered: extensions.strangler.servedBy and serviceName on
    # backend errors in GraphQL answers, X-Strangler-Served-By on REST answers. Off: only requests
    # with a valid admin token in X-Strangler-Admin-Token are told (strangler_proxy/disclosure.py).
    expose_served_by: bool = False

    @field_validator("fields")
    @classmethod
    def _field_names(cls, v: dict[str, FieldConfig]) -> dict[str, FieldConfig]:
        for name in v:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"{name!r}: a field is named Type.field")
        return v


class ShadowSettings(_Frozen):
    queue_size: int = Field(default=DEFAULT_SHADOW_QUEUE, ge=1)
    workers: int = Field(default=DEFAULT_SHADOW_WORKERS, ge=1)
    timeout_s: float = Field(default=DEFAULT_SHADOW_TIMEOUT_S, gt=0)
    body_limit: int = Field(default=DEFAULT_SHADOW_BODY_LIMIT, ge=0)
    # Rechecks of mismatches (compare.recheck_after_s): started per second at
    # most, and at most this many waiting or running; past either the mismatch
    # is recorded as it is and counted (outcome="over_budget").
    recheck_budget_per_s: float = Field(default=DEFAULT_RECHECK_BUDGET_PER_S, ge=0)
    recheck_max_inflight: int = Field(default=DEFAULT_RECHECK_MAX_INFLIGHT, ge=1)


class StoreSettings(_Frozen):
    url: str | None = None  # default: databases.database_url("control")
    batch_size: int = Field(default=500, ge=1)
    flush_interval_s: float = Field(default=0.5, gt=0)
    body_limit: int = Field(default=16 * 1024, ge=0)  # stored sample bodies are truncated
    samples_per_path: int = Field(default=20, ge=0)
    retention_days: float = Field(default=14, gt=0)
    bucket_s: int = Field(default=DEFAULT_BUCKET_S, ge=1)


_OBJECT_REF_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def _object_ref(v: str | None) -> str | None:
    if v is not None and not _OBJECT_REF_RE.match(v):
        raise ValueError(f"{v!r}: name a Python object as module:attribute, e.g. my_monolith.stack:APP")
    return v


# Databases the toolkit itself owns: no app of the stack may take these names.
RESERVED_DATABASES = frozenset({"control", "results"})


class StackApp(_Frozen):
    """One program ``strangler up`` starts before the proxy (docs/config.md "stack")."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")  # also the name of its database
    app: str | None = None  # module:attribute of a strangler_proxy.stack.AppSpec
    command: tuple[str, ...] | None = None  # ... or any program; {host} and {port} are filled in
    upstream: str | None = None  # it listens where this upstream points (default: the one of its name)
    health: str = "/healthz"  # a command is up once this path answers 2xx

    @field_validator("app")
    @classmethod
    def _app_ref(cls, v: str | None) -> str | None:
        return _object_ref(v)

    @field_validator("health")
    @classmethod
    def _health(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("must be a path starting with /")
        return v

    @model_validator(mode="after")
    def _one_kind(self) -> StackApp:
        if (self.app is None) == (self.command is None):
            raise ValueError("give exactly one of app (a Python AppSpec) or command (a program)")
        if self.command is not None and not self.command:
            raise ValueError("command must name a program")
        return self


class StackConfig(_Frozen):
    """What ``strangler up``/``service``/``backfill``/``sync``/``seed``/``db`` and
    ``traffic`` run: the toolkit knows the apps only through this section."""

    apps: tuple[StackApp, ...] = ()
    traffic: str | None = None  # module:attribute of a strangler_proxy.stack.traffic.PlanFactory

    @field_validator("traffic")
    @classmethod
    def _traffic_ref(cls, v: str | None) -> str | None:
        return _object_ref(v)


_CELL_NAME = r"[a-z0-9][a-z0-9_\-]*"
# Between a route's (or field's) name and a cell's in every per-cell name: the
# flip "ratings@eu-1", its audit rows and results, the upstream "ratings@eu-1".
CELL_SEP = "@"


class CellUpstream(_Frozen):
    """Where one upstream of a cell listens: ``url`` (one endpoint) or ``endpoints``;
    every other setting (timeouts, health, retries, headers) is the upstream's own."""

    url: str | None = None
    endpoints: tuple[EndpointConfig, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return {"url": v} if isinstance(v, str) else v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return None if v is None else _http_url(v)

    @model_validator(mode="after")
    def _one_way(self) -> CellUpstream:
        if (self.url is None) == (not self.endpoints):
            raise ValueError("give a URL, or endpoints (several), not both and not neither")
        return self


class CellConfig(_Frozen):
    """One cell: a complete, isolated copy of the stack (docs/cells.md)."""

    name: str = Field(pattern=rf"^{_CELL_NAME}$")
    weight: float = Field(default=1.0, ge=0, le=1000)  # share of the keys (0: only its pins)
    upstreams: dict[str, CellUpstream] = Field(default_factory=dict)  # upstream name -> this cell's copy


class CellsConfig(_Frozen):
    """Partition-key routing: every request goes to one cell (docs/cells.md)."""

    partition_key: str  # header:X-Tenant, path:NAME, query:NAME, cookie:NAME; GraphQL also arg:NAME
    # A request without a key: "refuse" (400, never forwarded) or the name of the cell that takes it.
    unkeyed: str = "refuse"
    pins: dict[str, str] = Field(default_factory=dict)  # key -> cell, e.g. a large tenant on its own cell
    cells: tuple[CellConfig, ...] = Field(min_length=1)

    @field_validator("partition_key")
    @classmethod
    def _key(cls, v: str) -> str:
        if not _PARTITION_RE.match(v) or v.startswith("key:"):
            raise ValueError("must be header:NAME, path:NAME, query:NAME, cookie:NAME or (GraphQL) arg:NAME")
        return v

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.cells)

    def problems(self, config: StranglerConfig) -> list[tuple[tuple[Any, ...], str]]:
        """Cells that cannot serve what the file routes, located at their lines."""
        problems: list[tuple[tuple[Any, ...], str]] = []
        names = self.names
        first: dict[str, int] = {}
        for i, cell in enumerate(self.cells):
            if cell.name in first:
                problems.append((("cells", "cells", i, "name"), f"{cell.name!r} is used by cells[{first[cell.name]}]"))
            first.setdefault(cell.name, i)
        if sum(c.weight for c in self.cells) <= 0:
            problems.append((("cells", "cells"), "the weights add up to 0: no cell would take a key"))
        needed = config.cell_upstreams_needed()
        for i, cell in enumerate(self.cells):
            for name in cell.upstreams:
                if name not in config.upstreams:
                    problems.append((("cells", "cells", i, "upstreams", name),
                                     f"{name!r} is not an upstream (known: {sorted(config.upstreams)})"))
            missing = sorted(needed - set(cell.upstreams))
            if missing:
                problems.append((("cells", "cells", i, "upstreams"),
                                 f"cell {cell.name!r} has no URL for {', '.join(missing)} (its routes need "
                                 "every upstream in every cell)"))
        for key, cell_name in self.pins.items():
            if cell_name not in names:
                problems.append((("cells", "pins", key), f"{cell_name!r} is not a cell (known: {list(names)})"))
        if self.unkeyed != "refuse" and self.unkeyed not in names:
            problems.append((("cells", "unkeyed"), f"{self.unkeyed!r}: 'refuse' or a cell (known: {list(names)})"))
        return problems


def expand_cells(config: StranglerConfig) -> StranglerConfig:
    """``config`` with each cell's copy of an upstream as an upstream of its own,
    named ``NAME@CELL`` (its pools, health, switches and metrics are that cell's
    alone); the upstreams the cells give replace the file's shared entries."""
    cells = config.cells
    if cells is None:
        return config
    given = {name for cell in cells.cells for name in cell.upstreams}
    upstreams = {name: up for name, up in config.upstreams.items() if name not in given}
    for cell in cells.cells:
        for name, where in cell.upstreams.items():
            upstreams[f"{name}{CELL_SEP}{cell.name}"] = config.upstreams[name].model_copy(
                update={"url": where.url, "endpoints": where.endpoints})
    return config.model_copy(update={"upstreams": upstreams})


class StranglerConfig(_Frozen):
    version: Literal[1] = 1
    proxy: ProxySettings = ProxySettings()
    upstreams: dict[str, UpstreamConfig]
    databases: dict[str, str] = Field(default_factory=dict)  # name -> URL (see databases.py)
    shadow: ShadowSettings = ShadowSettings()
    store: StoreSettings = StoreSettings()
    compare: CompareConfig = CompareConfig()
    guardrails: GuardrailConfig = GuardrailConfig()
    readiness: ReadinessConfig = ReadinessConfig()
    routes: tuple[RouteConfig, ...] = ()
    graphql: GraphQLConfig = GraphQLConfig()
    stack: StackConfig = StackConfig()
    cells: CellsConfig | None = None

    @model_validator(mode="after")
    def _references(self, info: ValidationInfo) -> StranglerConfig:
        # load_config_text checks references itself, to point at their lines.
        if not (info.context or {}).get("defer_references"):
            problems = self.reference_problems()
            if problems:
                raise ValueError("; ".join(f"{field_name(loc)}: {msg}" for loc, msg in problems))
        return self

    def reference_problems(self) -> list[tuple[tuple[Any, ...], str]]:
        """Names that point at nothing: upstreams, backends, duplicate routes."""
        problems: list[tuple[tuple[Any, ...], str]] = [
            (("upstreams", name, *loc), msg) for name, up in self.upstreams.items() for loc, msg in up.endpoint_problems()
        ]
        known = sorted(self.upstreams)
        if self.proxy.default_upstream not in self.upstreams:
            problems.append(
                (("proxy", "default_upstream"), f"{self.proxy.default_upstream!r} is not an upstream (known: {known})")
            )
        seen: set[str] = set()
        for i, r in enumerate(self.routes):
            if r.name in seen:
                problems.append((("routes", i, "name"), f"{r.name!r} is used by an earlier route"))
            seen.add(r.name)
            for label, up in (("legacy", r.legacy), ("target", r.target)):
                if up is not None and up not in self.upstreams:
                    problems.append((("routes", i, label), f"{up!r} is not an upstream (known: {known})"))
        for name, b in self.graphql.backends.items():
            if b.upstream not in self.upstreams:
                problems.append((("graphql", "backends", name, "upstream"), f"{b.upstream!r} is not an upstream"))
        for fname, f in self.graphql.fields.items():
            if f.target not in self.graphql.backends:
                problems.append(
                    (
                        ("graphql", "fields", fname, "target"),
                        f"{f.target!r} is not a graphql backend (known: {sorted(self.graphql.backends)})",
                    )
                )
        if self.cells is not None:
            problems.extend(self.cells.problems(self))
        given = {name for cell in self.cells.cells for name in cell.upstreams} if self.cells else set()
        for name, up in self.upstreams.items():
            if up.url is None and not up.endpoints and name not in given:
                problems.append((("upstreams", name), "give url (one endpoint) or endpoints (several); only an "
                                                      "upstream every cell gives may leave both out"))
        names: set[str] = set()
        for i, a in enumerate(self.stack.apps):
            if a.name in names or a.name in RESERVED_DATABASES:
                problems.append((("stack", "apps", i, "name"), f"{a.name!r} is used by an earlier app or the toolkit"))
            names.add(a.name)
            if a.upstream is not None and a.upstream not in self.upstreams:
                problems.append((("stack", "apps", i, "upstream"), f"{a.upstream!r} is not an upstream (known: {known})"))
            elif a.command is not None and self.stack_upstream(a) is None:
                problems.append((("stack", "apps", i, "upstream"), "a command needs an upstream: where it listens"))
        return problems

    def cell_upstreams_needed(self) -> set[str]:
        """The upstreams a request may be sent to: the default, every route's, every GraphQL backend's."""
        needed = {self.proxy.default_upstream}
        for r in self.routes:
            needed.update(u for u in (r.legacy, r.target) if u is not None)
        needed.update(b.upstream for b in self.graphql.backends.values())
        return needed & set(self.upstreams)

    def stack_upstream(self, app: StackApp) -> UpstreamConfig | None:
        """The upstream whose URL says where ``app`` listens (its own, else the one of its name)."""
        return self.upstreams.get(app.upstream or app.name)

    def route(self, name: str) -> RouteConfig | None:
        return next((r for r in self.routes if r.name == name), None)

    def control_database_url(self) -> str:
        """The shared database of flips and shadow results: env
        ``STRANGLER_CONTROL_DATABASE_URL``, ``databases.control``, ``store.url``,
        then the default (see databases.py)."""
        from strangler_proxy.databases import database_url

        return database_url("control", self.databases.get("control") or self.store.url)

    def database_url_of(self, name: str) -> str:
        """The URL of database ``name`` as this file configures it (see databases.py)."""
        if name == "control":
            return self.control_database_url()
        from strangler_proxy.databases import database_url

        return database_url(name, self.databases.get(name))

    def admin_tokens(self) -> dict[str, str]:
        """Configured tokens plus ``STRANGLER_ADMIN_TOKEN`` (named ``env``)."""
        tokens = dict(self.proxy.admin_tokens)
        env = os.environ.get(ADMIN_TOKEN_ENV)
        if env:
            tokens["env"] = env
        return tokens

    def compare_for(self, route: RouteConfig | FieldConfig) -> CompareConfig:
        return self.compare.merged(route.compare)

    def guardrails_for(self, route: RouteConfig | FieldConfig) -> GuardrailConfig:
        return route.guardrails or self.guardrails

    def readiness_for(self, route: RouteConfig | FieldConfig) -> ReadinessConfig:
        return route.readiness or self.readiness


def load_config_text(text: str, *, file: str = "<string>") -> StranglerConfig:
    """Parse and validate YAML text; raise :class:`ConfigErrors` naming every problem."""
    data, lines = read_yaml(text, file)
    if not isinstance(data, dict):
        raise ConfigErrors([ConfigError("the top level must be a mapping", file=file, line=1)])
    try:
        config = StranglerConfig.model_validate(data, context={"defer_references": True})
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if p not in ("function-after",))
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown field (check its spelling; see docs/config.md)"
            elif err["type"] == "missing":
                msg = "required field is missing"
            elif err["type"] == "enum":
                msg = f"{msg}; got {err.get('input')!r}"
            errors.append(ConfigError(msg, file=file, line=line_for(loc, lines), field=field_name(loc)))
        raise ConfigErrors(errors) from exc
    problems = config.reference_problems()
    if problems:
        raise ConfigErrors(
            [ConfigError(msg, file=file, line=line_for(loc, lines), field=field_name(loc)) for loc, msg in problems]
        )
    return expand_cells(config)


def load_config(path: str | os.PathLike[str]) -> StranglerConfig:
    """Read ``strangler.yaml``; every problem raises :class:`ConfigErrors`."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigErrors([ConfigError(f"cannot read: {exc.strerror}", file=str(p))]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigErrors([ConfigError("not UTF-8 text", file=str(p))]) from exc
    return load_config_text(text, file=str(p))
