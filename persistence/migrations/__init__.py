"""Alembic migrations of the Cortex Core schema; `Database.migrate()` applies them."""
