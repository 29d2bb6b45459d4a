"""The schema revisions a store is at and those this version expects, read without Alembic.

`check_store` (every operator command: `status`, `log`, `conflicts`...) only compares the two,
and importing Alembic and loading its migration scripts cost those commands more than the rest
of their start-up. The revisions are read from the migration files' own `revision` and
`down_revision` assignments, and the store's from Alembic's version table. Migrating still goes
through Alembic (`_alembic`); a unit test checks that both readings agree.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text

if TYPE_CHECKING:
    from sqlalchemy import Connection

__all__ = ["current_revisions", "head_revisions", "known_revisions"]

VERSIONS_DIR = Path(__file__).with_name("migrations") / "versions"
VERSION_TABLE = "alembic_version"  # Alembic's default; env.py does not change it


@functools.cache
def _scripts() -> dict[str, tuple[str, ...]]:
    """Each migration's revision and the revisions it follows, from its module's assignments."""
    scripts: dict[str, tuple[str, ...]] = {}
    for path in sorted(VERSIONS_DIR.glob("*.py")):
        names: dict[str, object] = {}
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.AnnAssign | ast.Assign) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name) and target.id in ("revision", "down_revision"):
                        names[target.id] = ast.literal_eval(node.value)
        if "revision" not in names:
            continue  # not a migration (a helper module)
        down = names.get("down_revision")
        follows = () if down is None else (down,) if isinstance(down, str) else tuple(down)  # type: ignore[arg-type]
        scripts[str(names["revision"])] = follows
    return scripts


def known_revisions() -> frozenset[str]:
    """Every revision a migration of this version defines."""
    return frozenset(_scripts())


def head_revisions() -> tuple[str, ...]:
    """The revisions this version of customer-sync expects a store to be at."""
    followed = {rev for follows in _scripts().values() for rev in follows}
    return tuple(sorted(rev for rev in _scripts() if rev not in followed))


def current_revisions(conn: Connection) -> tuple[str, ...]:
    """The revisions the store is at; empty when it has no schema yet."""
    if not conn.dialect.has_table(conn, VERSION_TABLE):
        return ()
    rows = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars()
    return tuple(sorted(rows))
