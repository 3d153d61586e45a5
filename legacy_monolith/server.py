"""Run the monolith on a socket: start, report the URL, stop cleanly.

Used by ``strangler monolith``, by ``strangler up`` (as one component of the
stack) and by the tests (port 0 picks a free port).

    >>> server = MonolithServer("sqlite+aiosqlite:///data/monolith.sqlite3", port=0)
    >>> server.url is None
    True
"""

from __future__ import annotations

from aiohttp import web

from legacy_monolith.app import create_app

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8001


class MonolithServer:
    """The monolith app behind an aiohttp ``AppRunner`` on ``host:port``."""

    def __init__(self, database_url: str, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
        self.database_url = database_url
        self.host = host
        self.port = port
        self.url: str | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        """Listen and return the base URL (with the real port when ``port=0``)."""
        runner = web.AppRunner(create_app(self.database_url), access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        host, port = runner.addresses[0][:2]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
