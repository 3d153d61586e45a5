"""Where a running process's logs go, set once at start-up.

Diagnostics (every logger but the access log) go to stderr as text lines.
The access log (``strangler.access``) is one JSON object per line with
nothing around it, so it can be shipped as is: to stdout (``"-"``), to a file,
or nowhere (``None``). It is written through
:class:`~strangler_proxy.dataplane.accesslog.BufferedLineHandler`, which costs the
request path one deque append.

    configure_logging(access_log="-")              # strangler proxy
    configure_logging(access_log="data/access.log") # strangler up
"""

from __future__ import annotations

import logging
import sys

from strangler_proxy.dataplane.accesslog import ACCESS_LOGGER, BufferedLineHandler, write_access_log_to

DIAGNOSTIC_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(access_log: str | None, level: int = logging.INFO) -> BufferedLineHandler | None:
    """Set up diagnostics and the access log; returns the access handler to close."""
    logging.basicConfig(level=level, format=DIAGNOSTIC_FORMAT, stream=sys.stderr)
    access = logging.getLogger(ACCESS_LOGGER)
    access.propagate = False  # never also as a text line on stderr
    if access_log is None:
        access.setLevel(logging.CRITICAL + 1)  # off: AccessLog.emit returns before building the line
        return None
    if access_log == "-":
        handler = BufferedLineHandler(sys.stdout.buffer)
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        return handler
    return write_access_log_to(access_log)
