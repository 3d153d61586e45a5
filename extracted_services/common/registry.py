"""The demo's services by name, for its own tests and benchmarks.

The toolkit does not use this: ``strangler up`` and the CLI find the services
through ``stack.apps`` in strangler.yaml. Each service package has a ``spec``
module exposing ``APP`` (its :class:`~strangler_proxy.stack.apps.AppSpec`).

    >>> service_spec("ratings").default_port
    8101
"""

from __future__ import annotations

import importlib

from strangler_proxy.stack.apps import AppSpec

SERVICE_NAMES = ("ratings", "credits", "images")


def service_spec(name: str) -> AppSpec:
    if name not in SERVICE_NAMES:
        raise KeyError(f"unknown service {name!r}; known: {', '.join(SERVICE_NAMES)}")
    spec: AppSpec = importlib.import_module(f"extracted_services.{name}.spec").APP
    return spec
