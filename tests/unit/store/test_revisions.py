"""The schema revisions read without Alembic (`store._revisions`) agree with Alembic's."""

from __future__ import annotations

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from customer_sync.store import _revisions
from customer_sync.store._alembic import alembic_config, head_revisions
from customer_sync.store.db import open_store


def test_heads_read_from_the_files_are_alembics() -> None:
    """The head revisions read from the migration files are the ones Alembic finds."""
    assert head_revisions() == _revisions.head_revisions()


def test_known_revisions_are_alembics() -> None:
    """Every revision Alembic knows is known from the files, and no other."""
    scripts = ScriptDirectory.from_config(alembic_config())
    assert {s.revision for s in scripts.walk_revisions()} == _revisions.known_revisions()


def test_current_revisions_are_alembics(store_url: str) -> None:
    """A migrated store is at the revisions Alembic reads from it, and those are the heads."""
    with open_store(store_url) as store, store.transaction() as conn:
        expected = tuple(sorted(MigrationContext.configure(conn).get_current_heads()))
        assert expected == _revisions.current_revisions(conn)
        assert _revisions.head_revisions() == _revisions.current_revisions(conn)


def test_a_store_without_schema_is_at_no_revision(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """An empty database has no version table: no revision, not an error."""
    with open_store(f"sqlite:///{tmp_path}/empty.db", migrate=False) as store, store.transaction() as conn:
        assert () == _revisions.current_revisions(conn)
