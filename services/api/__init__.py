"""The HTTP API (FastAPI): intake, queries, admin, health, auth and the error body."""
