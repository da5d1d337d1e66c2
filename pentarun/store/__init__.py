"""Persistence: SQLite (WAL) through one dedicated writer thread."""
