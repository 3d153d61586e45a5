"""Re-reading ``strangler.yaml`` while the proxy runs: on SIGHUP and when the file is saved.

The file is watched by polling its modification time (no inotify dependency;
a second of latency is fine for a config file). A new text goes through the
same :func:`~strangler_proxy.config.load_config` validation as at start-up; a
bad file is refused whole, logged with every error, and the running config
stays. A good one goes to :meth:`FlipService.reload`, which applies the
file-vs-flip precedence, and then to :meth:`SwitchService.reload`, which drops
the upstream switches the file no longer allows (a zone or endpoint it removed).

    >>> reloader = ConfigReloader("strangler.yaml", flips)   # doctest: +SKIP
    >>> reloader.start(watch=True, sighup=True)              # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
from pathlib import Path
from typing import Any

from strangler_proxy.config import Mode, StranglerConfig, load_config
from strangler_proxy.control.flips import FileReload, FlipService
from strangler_proxy.control.state_store import AuditDraft
from strangler_proxy.control.switches import SwitchService
from strangler_proxy.errors import ConfigError, ConfigErrors, StranglerError

log = logging.getLogger("strangler.reload")

DEFAULT_WATCH_INTERVAL_S = 1.0


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def _nothing_removed() -> dict[str, list[dict[str, Any]]]:
    return {"routes": [], "fields": []}


def _removed_text(applied: FileReload) -> str:
    """``; removed route(s): cast (shadow); removed GraphQL field(s): Title.rating (canary 5%)`` or ''."""
    out = ""
    for what, gone in (("route(s)", applied.removed_routes), ("GraphQL field(s)", applied.removed_fields)):
        if gone:
            out += f"; removed {what}: " + ", ".join(
                f"{r.name} ({r.mode.value}" + (f" {r.percent:g}%" if r.mode is Mode.CANARY else "")
                + (", a runtime flip" if r.source == "flip" else "") + ")"
                for r in gone
            )
    return out


class ConfigReloader:
    """Reloads one config file into a :class:`FlipService` on demand, on SIGHUP, on save."""

    def __init__(self, path: str | os.PathLike[str], flips: FlipService, *,
                 interval_s: float = DEFAULT_WATCH_INTERVAL_S, switches: SwitchService | None = None) -> None:
        self.path = Path(path)
        self.flips = flips
        self.switches = switches
        self.interval_s = interval_s
        self.last_error: str | None = None
        self.reloads = 0  # successful reloads, for tests and /routes
        self._lock = asyncio.Lock()
        self._stamp = _stamp(self.path)
        self._digest = _digest(self.path)  # the text currently running
        self._task: asyncio.Task[None] | None = None
        self._sighup = False

    def start(self, *, watch: bool = True, sighup: bool = False) -> None:
        if watch:
            self._task = asyncio.create_task(self._watch(), name="strangler-config-watch")
        if sighup:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
            self._sighup = True

    async def stop(self) -> None:
        if self._sighup:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            self._sighup = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _on_sighup(self) -> None:
        log.info("SIGHUP: reloading %s", self.path)
        asyncio.ensure_future(self.reload_now(trigger="SIGHUP", force=True))

    async def reload_now(self, *, trigger: str = "admin", force: bool = True) -> dict[str, Any]:
        """Load, validate and apply the file. ``force`` False skips an unchanged text.

        Returns ``{"ok": bool, "changes": [...], "errors": [...], "removed": {"routes": [...],
        "fields": [...]}, "switches": [...]}`` (each removed one with the mode it had until now;
        each upstream switch the file dropped); never raises for a bad file (the caller is a
        signal handler or a watcher).
        """
        async with self._lock:
            digest = _digest(self.path)
            if not force and digest == self._digest:
                self.last_error = None  # the running text is back in the file
                return {"ok": True, "changes": [], "errors": [], "unchanged": True, "removed": _nothing_removed(),
                        "switches": []}
            try:
                config = load_config(self.path)
                applied = await self.flips.reload_file(config)
                # No await between the config swap above and this: no request sees the new
                # file with a pin to a zone (or drains of endpoints) it no longer has.
                if self.switches is not None:
                    self.switches.apply_now(config)
            except ConfigErrors as exc:
                return self._refused(trigger, [str(e) for e in exc.errors])
            except (ConfigError, StranglerError) as exc:
                return self._refused(trigger, [str(exc)])
            self._digest = digest
            self.last_error = None
            self.reloads += 1
            dropped = await self._drop_switches(config)
            removed = _removed_text(applied)
            # Removing routes or fields changes what the proxy serves: never silently.
            log.log(
                logging.WARNING if removed else logging.INFO,
                "reloaded %s (%s): new config applied; %d route/field mode change(s) from the file%s",
                self.path, trigger, len(applied.changes), removed,
            )
            return {
                "ok": True,
                "changes": [
                    {"name": c.name, "from": {"mode": c.from_mode, "percent": c.from_percent},
                     "to": {"mode": c.to_mode, "percent": c.to_percent}, "reason": c.reason}
                    for c in applied.changes
                ],
                "errors": [],
                "removed": {
                    "routes": [r.as_json() for r in applied.removed_routes],
                    "fields": [r.as_json() for r in applied.removed_fields],
                },
                "switches": [
                    {"name": d.name, "from": d.from_mode, "to": d.to_mode, "reason": d.reason,
                     **({"endpoint": d.details["endpoint"]} if d.details and "endpoint" in d.details else {})}
                    for d in dropped
                ],
            }

    async def _drop_switches(self, config: StranglerConfig) -> list[AuditDraft]:
        """Persist and audit the upstream switches the applied file dropped. The file is in
        force already, so a control-database failure here is logged, not a refusal: the
        switches stay dropped in this replica and are dropped again on the next reload or start."""
        if self.switches is None:
            return []
        try:
            return await self.switches.reload(config)
        except StranglerError as exc:
            log.error("reloaded %s, but the upstream switches it drops could not be recorded: %s", self.path, exc)
            return []

    def _refused(self, trigger: str, errors: list[str]) -> dict[str, Any]:
        self.last_error = "\n".join(errors)
        log.error("refused to reload %s (%s); the running config stays:\n%s", self.path, trigger, self.last_error)
        return {"ok": False, "changes": [], "errors": errors, "removed": _nothing_removed(), "switches": []}

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            stamp = _stamp(self.path)
            if stamp is None or stamp == self._stamp:
                continue
            self._stamp = stamp
            try:
                await self.reload_now(trigger="file saved", force=False)
            except Exception:  # noqa: BLE001 -- the watcher must outlive any one bad reload; it is logged
                log.exception("reloading %s failed", self.path)
