"""Fixtures shared by the test files: the throwaway PostgreSQL server (pg_support)."""

from pg_support import pg_server, pg_url, records

__all__ = ["pg_server", "pg_url", "records"]
