"""The images service: ``GET /v1/images/titles/{id}`` (the proxy rewrites the
monolith's ``/api/titles/{id}/images`` to it) and ``Title.images`` in GraphQL."""

from extracted_services.images.app import DEFAULT_PORT, create_app

__all__ = ["DEFAULT_PORT", "create_app"]
