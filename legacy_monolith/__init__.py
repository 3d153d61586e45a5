"""The legacy film-catalogue monolith (REST under /api, GraphQL at /graphql),
with the quirks of a real one kept on purpose -- see docs/monolith.md."""
