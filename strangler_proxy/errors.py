"""The one exception tree of strangler.

    StranglerError
    ├── ConfigError            a strangler.yaml (or setting) is invalid; names file, line, field
    ├── FlipError              a flip was refused (unknown route, bad mode/percent)
    ├── SwitchError            a failover or drain was refused (unknown upstream, zone, endpoint); ``upstream=``
    ├── UpstreamError          an upstream could not answer; carries ``upstream=``
    │   ├── UpstreamConnectError   refused / reset / DNS            -> 502
    │   └── UpstreamTimeout        no answer in time                 -> 504
    ├── StoreError             the state/results database failed
    │   └── MissingDatabasesError  databases a URL names do not exist; names each, says how to create them
    ├── GraphQLGatewayError    composition or planning failed
    │   └── BackendSDLUnavailable  a backend gave no SDL yet (down, slow): the gateway can wait
    ├── DataMoveError          a backfill, verify or sync run failed; carries ``service=``
    ├── NoiseModelError        a saved learned-noise model cannot be read (relearn)
    └── HarError               a traffic recording (HAR) cannot be replayed at all; carries ``source=``

Library errors (aiohttp, SQLAlchemy, pydantic, yaml) are translated at the
boundary with ``raise ... from exc`` so callers only ever catch these.
"""

from __future__ import annotations


class StranglerError(Exception):
    """Root of every error strangler raises on purpose."""


class ConfigError(StranglerError):
    """A configuration file or setting is invalid.

    >>> str(ConfigError("mode must be one of legacy, shadow", file="s.yaml", line=12, field="routes[0].mode"))
    's.yaml:12: routes[0].mode: mode must be one of legacy, shadow'
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "") + ": "
        elif self.line:
            where = f"line {self.line}: "
        field = f"{self.field}: " if self.field else ""
        return f"{where}{field}{self.message}"


class ConfigErrors(ConfigError):
    """Several problems found in one file; the file is refused whole."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors), file=errors[0].file if errors else None)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


class FlipError(StranglerError):
    """A flip was refused; nothing changed."""

    def __init__(self, message: str, *, route: str | None = None) -> None:
        self.route = route
        super().__init__(f"{route}: {message}" if route else message)


class SwitchError(StranglerError):
    """An operator's failover or drain of an upstream was refused; nothing changed.

    >>> str(SwitchError("no endpoint in zone 'mars' (zones: eu, us)", upstream="legacy"))
    "upstream 'legacy': no endpoint in zone 'mars' (zones: eu, us)"
    """

    def __init__(self, message: str, *, upstream: str) -> None:
        self.upstream = upstream
        super().__init__(f"upstream {upstream!r}: {message}")


class UpstreamError(StranglerError):
    """An upstream did not produce a response."""

    def __init__(self, message: str, *, upstream: str) -> None:
        self.upstream = upstream
        super().__init__(f"upstream {upstream!r}: {message}")


class UpstreamConnectError(UpstreamError):
    """Connection refused, reset or otherwise broken (answered as 502)."""


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer in time (answered as 504)."""


class StoreError(StranglerError):
    """The state or results database failed."""


class MissingDatabasesError(StoreError):
    """Databases named by the configured URLs do not exist on their server.

    ``databases`` are their names on the server; ``commands`` are shell lines
    that create them (empty when ``strangler db create`` can do it itself).

    >>> MissingDatabasesError("no database monolith", databases=("monolith",)).databases
    ('monolith',)
    """

    def __init__(self, message: str, *, databases: tuple[str, ...], commands: tuple[str, ...] = ()) -> None:
        self.databases = databases
        self.commands = commands
        super().__init__(message)


class GraphQLGatewayError(StranglerError):
    """Schema composition or query planning failed."""


class BackendSDLUnavailable(GraphQLGatewayError):
    """A backend gave no SDL (down, slow, not a subgraph): unlike a conflict, this can pass."""




class DataMoveError(StranglerError):
    """A backfill, verify or sync run failed; the cursor stays where it was."""

    def __init__(self, message: str, *, service: str) -> None:
        self.service = service
        super().__init__(f"{service}: {message}")


class NoiseModelError(StranglerError):
    """A persisted learned-noise model could not be read; discard it and relearn."""


class HarError(StranglerError):
    """A HAR file cannot be replayed at all (not JSON, truncated, not a HAR, another version).

    Problems of single entries are not raised: they are listed and those entries skipped.

    >>> str(HarError("not a HAR file", source="visit.har"))
    'visit.har: not a HAR file'
    """

    def __init__(self, message: str, *, source: str) -> None:
        self.source = source
        super().__init__(f"{source}: {message}")
