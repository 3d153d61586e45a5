"""One proxy process per core: ``strangler proxy --workers N``.

The parent process starts N workers and supervises them; it serves nothing
itself. Every worker is a complete proxy replica (``ProxyServer``): it listens
on the same port with ``SO_REUSEPORT`` (the kernel spreads new connections over
the workers), and shares flips, switches, rollouts and results with the others
through the control database, exactly as replicas on several machines do.

One admin API serves them all: worker 0's, on the configured address. The
other workers run theirs on a loopback port of their own, announced in a
directory the parent made, and accept a token the parent made for this run;
worker 0 asks them for their counters: ``GET /routes`` sums every worker's
route counters, ``GET /metrics`` returns every worker's samples with a
``worker`` label (``sum without (worker) (...)`` in PromQL gives the
process-wide figure).

A worker that dies stops the whole group (the parent exits non-zero): a
supervisor (systemd, a container runtime) restarts it, as it would one process.

    count = worker_count("auto")            # the CPUs this process may run on
    run_workers("strangler.yaml", count, port=None, admin_port=None, access_log="-")
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import secrets
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from strangler_proxy.control.worker_group import WorkerSpec

log = logging.getLogger("strangler.workers")

STOP_GRACE_S = 10.0


def worker_count(value: str) -> int:
    """``--workers``: a number >= 1, or ``auto`` (the CPUs this process may run on).

    >>> worker_count("2"), worker_count("auto") >= 1
    (2, True)
    """
    if value == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover -- not Linux
            return max(1, os.cpu_count() or 1)
    count = int(value)
    if count < 1:
        raise ValueError("--workers must be at least 1, or auto")
    return count


# ------------------------------------------------------------------ the parent
def _worker_main(config: str, port: int | None, admin_port: int | None, access_log: str, spec: WorkerSpec) -> None:
    import uvloop

    from strangler_proxy.logs import configure_logging
    from strangler_proxy.server import run_proxy

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent tells the workers to stop (SIGTERM)
    handler = configure_logging(access_log)
    try:
        uvloop.run(run_proxy(config, port=port, admin_port=admin_port, worker=spec))
    finally:
        if handler is not None:
            handler.close()


def run_workers(config: str, count: int, *, port: int | None, admin_port: int | None, access_log: str) -> int:
    """Start ``count`` workers and wait; SIGINT/SIGTERM stop them all. Returns the exit code."""
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter each: no loop or socket is inherited
    with tempfile.TemporaryDirectory(prefix="strangler-workers-") as peers_dir:
        token = secrets.token_urlsafe(24)
        procs = [
            ctx.Process(target=_worker_main, name=f"strangler-worker-{i}",
                        args=(config, port, admin_port, access_log, WorkerSpec(i, count, peers_dir, token)))
            for i in range(count)
        ]
        stopping = False

        def stop(signum: int, frame: Any) -> None:
            nonlocal stopping
            stopping = True

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            # Worker 0 first: it migrates the control database and binds the admin API; the
            # others start once it announced itself (never N migrations at once).
            procs[0].start()
            first = Path(peers_dir) / "worker-0.port"
            while not first.exists() and procs[0].exitcode is None and not stopping:
                time.sleep(0.05)
            if not stopping and procs[0].exitcode is None:
                for proc in procs[1:]:
                    proc.start()
                log.info("%d proxy workers started (pids %s)", count, ", ".join(str(p.pid) for p in procs))
            failed = None
            while not stopping:
                for proc in procs:
                    if proc.pid is not None and proc.exitcode is not None:
                        failed = proc
                        break
                if failed is not None:
                    log.error("worker %s exited with %s: stopping the others", failed.name, failed.exitcode)
                    break
                time.sleep(0.2)
            for proc in procs:
                if proc.exitcode is None and proc.pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_S
            for proc in procs:
                proc.join(max(0.0, deadline - time.monotonic()))
                if proc.exitcode is None:
                    proc.kill()
                    proc.join()
            return 0 if failed is None else 1
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
