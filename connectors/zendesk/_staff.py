"""The account's agents and admins, whom customer-sync never writes to.

The account owner is an admin, and an upsert by email lands on whichever user holds the address,
staff included; so the connector checks every write against the staff it knows. It learns them
from every user it lists or reads (the export shows every role) and, before the first create,
from one search per role. Only primary emails are known: an agent's secondary address is not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from customer_sync_connectors.zendesk.models import User

__all__ = ["Staff"]

STAFF_ROLES = ("admin", "agent")


class Staff:
    """Ids and primary emails of the agents and admins seen so far."""

    def __init__(self) -> None:
        self._ids: set[int] = set()
        self._emails: set[str] = set()
        self._loaded = False
        self._lock = asyncio.Lock()

    def note(self, user: User) -> None:
        """Record a user's role as just seen (a demoted agent stops being staff)."""
        if user.is_end_user or user.role is None:
            self._ids.discard(user.id)
            if user.email:
                self._emails.discard(user.email.lower())
            return
        self._ids.add(user.id)
        if user.email and user.active:
            self._emails.add(user.email.lower())

    def holds(self, *, email: object = None, user_id: int | None = None) -> bool:
        """Whether the email (case-insensitively) or the id is a staff member's."""
        if isinstance(email, str) and email.strip().lower() in self._emails:
            return True
        return user_id is not None and user_id in self._ids

    async def load(self, search: Callable[[str], Awaitable[list[User]]]) -> None:
        """Search each staff role once per connector; the `role:` qualifier is UNVERIFIED, so
        results are noted by the role they carry, never by the query that found them."""
        async with self._lock:
            if self._loaded:
                return
            for role in STAFF_ROLES:
                for user in await search(f"role:{role}"):
                    self.note(user)
            self._loaded = True
