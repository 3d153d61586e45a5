"""The credits service: ``GET /api/titles/{id}/cast``,
``GET /api/people/{id}/known-for``, and ``Title.cast`` / ``Person.knownFor``
in GraphQL."""

from extracted_services.credits.app import DEFAULT_PORT, create_app

__all__ = ["DEFAULT_PORT", "create_app"]
