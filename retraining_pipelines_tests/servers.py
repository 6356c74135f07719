"""The real servers some tests need (PostgreSQL, Redis): how to reach them, and what a test does
when they are not there. On a machine without them those tests are skipped and say why; under
CI=true they must run (a skip there would hide a broken deployment)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from retraining_pipelines.settings import with_installed_driver

POSTGRES_ADMIN_URL = with_installed_driver(
    os.environ.get("RETRAINING_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"))
REDIS_URL = os.environ.get("RETRAINING_TEST_REDIS_URL", "redis://127.0.0.1:6379")


def unavailable(what: str, err: Exception) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} is required under CI=true and is not reachable: {err}")
    pytest.skip(f"{what} is not reachable ({' '.join(str(err).split())[:200]}); the test needs it")


@contextmanager
def postgres_database() -> Iterator[str]:
    """A PostgreSQL database of the caller's own, dropped afterwards (with whatever still holds it)."""
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"retraining_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as err:
        unavailable("PostgreSQL", err)
    try:
        yield sa.make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
