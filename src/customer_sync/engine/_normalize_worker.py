"""What the normalizing worker process runs (see `engine.normalizing`).

Kept apart, with nothing imported at module level beyond the standard library, so that a worker
starts quickly: it loads only the canonical schema and the field maps it is sent, not the
engine, the store or the logging stack.

The messages on the pipe (`serve`), as tuples whose first item names them:

daemon -> worker
    ("normalize", job, mapping, records, identity_key)   normalize these records' app fields
    ("exit",)                                            end
worker -> daemon
    ("ready",)                                           warmed up: send work
    ("done", job, wire)                                  the `Wire` of job's records
    ("failed", job, error)                               normalizing raised `error`
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from customer_sync.mapping.compile import AppMapping

__all__ = ["Wire", "fields_fingerprint", "normalize_fields", "serve", "warm_up"]

# What crosses the process boundary, per record: the canonical values; the field errors as
# (field, message, raw value) triples, since exceptions pickle poorly; the fingerprint of the
# app fields; and (kind, value, keyed hash) of each identity, when a key was given.
Wire = list[tuple[dict[str, Any], list[tuple[str | None, str, Any]], str, list[tuple[str, str, bytes]]]]


def normalize_fields(
    mapping: AppMapping, records: Sequence[Mapping[str, Any]], identity_key: bytes | None = None
) -> Wire:
    """Canonical values, field errors, fingerprint and identity hashes of each record's app
    fields: everything about a record that does not need the store."""
    from customer_sync.canonical import identity_hash, identity_values

    out: Wire = []
    order = mapping.app_field_order
    for fields in records:
        values, errors = mapping.to_canonical(fields)
        hashes = ([(kind, value, identity_hash(identity_key, kind, value)) for kind, value in identity_values(values)]
                  if identity_key is not None else [])
        out.append((values, [(e.field, str(e), e.raw_value) for e in errors], fields_fingerprint(order, fields), hashes))
    return out


def fields_fingerprint(order: Sequence[str], app_fields: Mapping[str, Any]) -> str:
    """Fingerprint of the app fields a map covers, `order` being its app fields in map order
    ("" and [] count as None).

    Hot path: computed for every record read and every write confirmed. The map's field order
    is fixed, so the repr of the values in that order is stable for the JSON-like scalars and
    lists apps send; anything holding a dict falls back to the canonical JSON fingerprint.
    """
    values = tuple(None if (v := app_fields.get(name)) in ("", []) else v for name in order)
    if any(isinstance(v, dict) for v in values):
        from customer_sync.sdk.connector import fingerprint

        return fingerprint(dict(zip(order, values, strict=True)))
    return hashlib.blake2b(repr(values).encode(), digest_size=12).hexdigest()


def warm_up() -> bool:
    """Load what normalizing needs (email-validator, phonenumbers and its metadata), so the
    first real page does not pay for it."""
    from customer_sync.canonical import FIELDS, normalize_value
    from customer_sync.mapping import compile as _compile  # noqa: F401  (field maps unpickle into it)

    normalize_value(FIELDS["email"], "warm.up@example.com")
    normalize_value(FIELDS["phone"], "+14155552671")
    return True


def serve(conn: Connection) -> None:
    """The worker process (started by `engine._worker`, which has made it die with the
    daemon): normalize what the daemon sends until it says exit or goes away."""
    import pickle

    warm_up()
    conn.send(("ready",))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the daemon is gone
        if message[0] != "normalize":
            return
        _, job, mapping, records, identity_key = message
        try:
            wire = normalize_fields(mapping, records, identity_key)
        except Exception as exc:  # noqa: BLE001 - sent back: the daemon normalizes that page in place
            try:
                error: BaseException = pickle.loads(pickle.dumps(exc))
            except Exception:  # noqa: BLE001 - an exception that does not pickle: named instead
                error = RuntimeError(f"{type(exc).__name__}: {exc}")
            conn.send(("failed", job, error))
        else:
            conn.send(("done", job, wire))
