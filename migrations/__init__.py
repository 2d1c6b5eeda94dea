"""beatd's Alembic migrations; installed as the package `beatd._migrations`."""
