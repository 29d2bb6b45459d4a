"""Compile an app's field map (TOML data) into functions between app fields and canonical values.

A field map is keyed by canonical field name; each entry names the app field, the direction
(`both`, `to_app`, `from_app`), an optional named transform and an optional enum value map
(app value -> canonical value); an app field is named by one entry only. Inbound, a value goes
app value -> enum map -> transform -> canonical normalization. Outbound, canonical value ->
transform -> reversed enum map.

Two things span fields. A phone written without an international prefix is read in the record's
own country (its `address.country`, worked out first), else in the app's default region; the
engine can read it again in the matched customer's country (`needs_customer_region`,
`phones_for_region`). And `full_name`, a pseudo field, maps one app field to both `first_name`
and `last_name`: read, it splits at the last space (`split_full_name`); written, it is first +
" " + last.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from customer_sync.canonical import (
    FIELDS,
    FieldSpec,
    NormalizeContext,
    field_spec,
    is_set_field,
    join_full_name,
    needs_region,
    normalize_value,
    split_full_name,
)
from customer_sync.errors import MappingError
from customer_sync.mapping.transforms import TRANSFORMS, Transform

__all__ = ["FULL_NAME", "AppMapping", "Direction", "FieldMapping", "compile_mapping"]

Direction = Literal["both", "to_app", "from_app"]
#: The pseudo canonical field of a one-field full name: first_name and last_name in one app field.
FULL_NAME = "full_name"
_COUNTRY = "address.country"


@dataclass(frozen=True, slots=True)
class FieldMapping:
    """One canonical field <-> one app field."""

    canonical: str
    app_field: str
    direction: Direction
    spec: FieldSpec
    transform: Transform | None = None
    values_in: Mapping[str, str] | None = None  # app value -> canonical value
    values_out: Mapping[Any, str] | None = None  # canonical value -> app value
    # Set for the two halves of a `full_name` entry: this field is that part of the app field's
    # full name. `AppMapping` reads and writes the two together.
    part: Literal["first", "last"] | None = None

    @property
    def inbound(self) -> bool:
        return self.direction != "to_app"

    @property
    def outbound(self) -> bool:
        return self.direction != "from_app"

    def to_canonical(self, value: Any, ctx: NormalizeContext) -> Any:
        if self.part is not None:
            first, last = self.split_name(value)
            return first if self.part == "first" else last
        # A value-map hit is already a normalized canonical value: it skips the transform, so
        # that the reverse lookup in to_app gives the app back exactly its own value.
        if self.values_in is not None and isinstance(value, str | int | bool) and str(value) in self.values_in:
            return self.values_in[str(value)]
        return normalize_value(self.spec, self._transformed(value), ctx)

    def split_name(
        self, value: Any, *, existing: tuple[str | None, str | None] | None = None,
    ) -> tuple[str | None, str | None]:
        """(first_name, last_name) of a `full_name` app value (see `split_full_name`)."""
        value = self._transformed(value)
        if value is not None and not isinstance(value, str):
            raise MappingError(f"{FULL_NAME}: expected text, got {type(value).__name__}", field=FULL_NAME)
        return split_full_name(value, existing=existing)

    def needs_region(self, value: Any) -> bool:
        """Whether this app value is a phone written without an international prefix."""
        if self.values_in is not None and isinstance(value, str | int | bool) and str(value) in self.values_in:
            return False
        try:
            return needs_region(self.spec, self._transformed(value))
        except MappingError:
            return False

    def _transformed(self, value: Any) -> Any:
        if self.transform is None:
            return value
        try:
            return self.transform.to_canonical(value)
        except (ValueError, TypeError, OverflowError, OSError) as exc:
            name = FULL_NAME if self.part is not None else self.canonical
            raise MappingError(
                f"{name}: transform {self.transform.name!r} failed ({type(exc).__name__})", field=name,
            ) from None

    def to_app(self, value: Any) -> Any:
        """The app value of one canonical value (a `full_name` part: see `AppMapping.to_app`)."""
        if self.values_out is not None and isinstance(value, str | int | float | bool) and value in self.values_out:
            return self.values_out[value]
        if self.transform is not None and value is not None:
            value = self.transform.to_app(value)
        return value


@dataclass(frozen=True)
class AppMapping:
    """The compiled field map of one app (picklable: it is sent to a normalizing worker)."""

    app: str
    fields: tuple[FieldMapping, ...]
    ctx: NormalizeContext = NormalizeContext()
    inbound: tuple[FieldMapping, ...] = field(init=False)
    outbound: tuple[FieldMapping, ...] = field(init=False)
    by_canonical: Mapping[str, FieldMapping] = field(init=False)
    set_fields: frozenset[str] = field(init=False)  # inbound fields merged element by element
    app_field_order: tuple[str, ...] = field(init=False)  # every mapped app field, in map order
    full_name_field: str | None = field(init=False)  # the app field mapped as `full_name`
    # Inbound, in the order they are read: the record's country first (phones are read in it),
    # and a full name once, by its first half.
    _reading: tuple[FieldMapping, ...] = field(init=False, repr=False)
    _country: FieldMapping | None = field(init=False, repr=False)
    _phones: tuple[FieldMapping, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        inbound = tuple(f for f in self.fields if f.inbound)
        country = next((f for f in inbound if f.canonical == _COUNTRY), None)
        first_name = next((f for f in self.fields if f.part == "first"), None)
        reading = ([country] if country else []) + [
            f for f in inbound if f is not country and f.part != "last"
        ]
        setattr_ = object.__setattr__
        setattr_(self, "inbound", inbound)
        setattr_(self, "outbound", tuple(f for f in self.fields if f.outbound))
        setattr_(self, "by_canonical", {f.canonical: f for f in self.fields})
        setattr_(self, "set_fields", frozenset(f.canonical for f in inbound if is_set_field(f.spec)))
        setattr_(self, "app_field_order", tuple(dict.fromkeys(f.app_field for f in self.fields)))
        setattr_(self, "full_name_field", first_name.app_field if first_name else None)
        setattr_(self, "_reading", tuple(reading))
        setattr_(self, "_country", country)
        setattr_(self, "_phones", tuple(f for f in inbound if f.spec.kind in ("phone", "phone_set")))

    @property
    def app_fields(self) -> frozenset[str]:
        return frozenset(f.app_field for f in self.fields)

    def to_canonical(self, app_fields: Mapping[str, Any]) -> tuple[dict[str, Any], list[MappingError]]:
        """Canonical values for the inbound fields present in `app_fields`, and the per-field
        errors. A field the record does not carry is absent (not a change); a bad value is an
        error for that field only.

        A phone without an international prefix is read in the record's own country (its
        `address.country`, once normalized), else in the app's default region. A `full_name`
        gives `first_name` and `last_name`, split at its last space."""
        values: dict[str, Any] = {}
        errors: list[MappingError] = []
        ctx = self.ctx
        for fm in self._reading:
            if fm.app_field not in app_fields:
                continue
            try:
                if fm.part is not None:
                    values["first_name"], values["last_name"] = fm.split_name(app_fields[fm.app_field])
                    continue
                value = values[fm.canonical] = fm.to_canonical(app_fields[fm.app_field], ctx)
            except MappingError as exc:
                exc.app = self.app
                exc.raw_value = app_fields[fm.app_field]  # what the app sent, for the operator
                errors.append(exc)
                continue
            if fm is self._country and value is not None and self._phones:
                ctx = _in_region(self.ctx.default_region, value)
        return values, errors

    def needs_customer_region(self, app_fields: Mapping[str, Any]) -> bool:
        """Whether the record's phones should be read again in the matched customer's country:
        the record has no country of its own, and an inbound phone field holds a number written
        without an international prefix (`phones_for_region` reads them)."""
        if not self._phones:
            return False
        if self._country is not None and self._country.app_field in app_fields:
            try:
                if self._country.to_canonical(app_fields[self._country.app_field], self.ctx) is not None:
                    return False
            except MappingError:
                pass  # a country that is no country is no country of the record's own
        return any(fm.needs_region(app_fields[fm.app_field])
                   for fm in self._phones if fm.app_field in app_fields)

    def phones_for_region(
        self, app_fields: Mapping[str, Any], region: str | None,
    ) -> tuple[dict[str, Any], list[MappingError]]:
        """The canonical values of the inbound phone fields only (`phone`, `other_phones`,
        `social.whatsapp`, ...), numbers without an international prefix read in `region` (an
        ISO 3166-1 alpha-2 code; None: the app's default region), and their errors."""
        ctx = _in_region(self.ctx.default_region, region) if region else self.ctx
        values: dict[str, Any] = {}
        errors: list[MappingError] = []
        for fm in self._phones:
            if fm.app_field not in app_fields:
                continue
            try:
                values[fm.canonical] = fm.to_canonical(app_fields[fm.app_field], ctx)
            except MappingError as exc:
                exc.app = self.app
                exc.raw_value = app_fields[fm.app_field]  # what the app sent, for the operator
                errors.append(exc)
        return values, errors

    def to_app(
        self, canonical: Mapping[str, Any], *, customer: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """App fields for the outbound canonical fields present in `canonical`.

        A `full_name` app field is first + " " + last. Written, it needs both parts: one given
        alone is joined with the other from `customer` (the customer's canonical values); with
        no `customer`, the full name is left out rather than written half.
        """
        out: dict[str, Any] = {}
        for fm in self.outbound:
            if fm.part is None:
                if fm.canonical in canonical:
                    out[fm.app_field] = fm.to_app(canonical[fm.canonical])
            elif fm.part == "first" and ("first_name" in canonical or "last_name" in canonical):
                if "first_name" in canonical and "last_name" in canonical:
                    parts = (canonical["first_name"], canonical["last_name"])
                elif customer is None:
                    continue
                else:
                    parts = (canonical.get("first_name", customer.get("first_name")),
                             canonical.get("last_name", customer.get("last_name")))
                out[fm.app_field] = fm.to_app(join_full_name(*parts))
        return out

    def expected_app_fields(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The app fields a record holds when it holds the canonical `values`: every mapped app
        field, whatever its direction (what the echo fingerprint of a write is made of)."""
        out: dict[str, Any] = {}
        for fm in self.fields:
            if fm.part is None:
                out[fm.app_field] = fm.to_app(values.get(fm.canonical))
            elif fm.part == "first":
                out[fm.app_field] = fm.to_app(
                    join_full_name(values.get("first_name"), values.get("last_name")))
        return out


@lru_cache(maxsize=512)
def _in_region(default_region: str | None, region: str) -> NormalizeContext:
    return NormalizeContext(default_region=default_region, region=region)


def compile_mapping(
    app: str,
    entries: Mapping[str, Any],
    *,
    custom_fields: Mapping[str, str],
    default_direction: Direction = "both",
    ctx: NormalizeContext = NormalizeContext(),
) -> tuple[AppMapping, list[str]]:
    """Compile `[apps.APP.fields]`. Returns the mapping and a list of problems, each
    `key.path: what is wrong` relative to `apps.APP.fields`."""
    problems: list[str] = []
    compiled: list[FieldMapping] = []
    seen_app_fields: dict[str, str] = {}
    if FULL_NAME in entries and ("first_name" in entries or "last_name" in entries):
        # Two writers of a name in one app: the parts and the whole would each overwrite the other.
        both = " and ".join(n for n in ("first_name", "last_name") if n in entries)
        problems.append(
            f"apps.{app}.fields.{FULL_NAME}: maps first_name and last_name from one app field, "
            f"and {both} {'is' if ' and ' not in both else 'are'} mapped too; map one or the other"
        )
    for canonical, raw in entries.items():
        where = f"apps.{app}.fields.{_key(canonical)}"
        spec = FIELDS["first_name"] if canonical == FULL_NAME else field_spec(canonical, custom_fields)
        if spec is None:
            hint = (
                " (declare it under [custom_fields])" if canonical.startswith("custom.")
                else " (see the canonical fields in docs/configuration.md)"
            )
            problems.append(f"{where}: unknown canonical field {canonical!r}{hint}")
            continue
        if isinstance(raw, str):
            raw = {"field": raw}
        if not isinstance(raw, Mapping):
            problems.append(f"{where}: expected an app field name or a table, got {type(raw).__name__}")
            continue
        unknown = set(raw) - {"field", "direction", "transform", "values"}
        if unknown:
            problems.append(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        app_field = raw.get("field")
        if not isinstance(app_field, str) or not app_field:
            problems.append(f"{where}.field: required, the app field name")
            continue
        direction = raw.get("direction", default_direction)
        if direction not in ("both", "to_app", "from_app"):
            problems.append(f"{where}.direction: must be both, to_app or from_app, not {direction!r}")
            continue
        transform = None
        if "transform" in raw:
            transform = TRANSFORMS.get(raw["transform"])
            if transform is None:
                problems.append(
                    f"{where}.transform: unknown transform {raw['transform']!r} "
                    f"(known: {', '.join(sorted(TRANSFORMS))})"
                )
                continue
        values_in = values_out = None
        if "values" in raw and canonical == FULL_NAME:
            problems.append(f"{where}.values: a value map needs a single field; {FULL_NAME} is two")
            continue
        if "values" in raw and is_set_field(spec):
            problems.append(f"{where}.values: a value map needs a single-valued field; {canonical} is a set")
            continue
        if "values" in raw:
            vmap = raw["values"]
            if not isinstance(vmap, Mapping) or not all(isinstance(v, str) for v in vmap.values()):
                problems.append(f"{where}.values: expected a table of app value = canonical value")
                continue
            values_in, values_out = {}, {}
            for app_value, canon_value in vmap.items():
                try:
                    norm = normalize_value(spec, canon_value, ctx)
                except MappingError as exc:
                    problems.append(f"{where}.values.{_key(app_value)}: {exc}")
                    continue
                values_in[str(app_value)] = norm
                values_out.setdefault(norm, app_value)
        # One app field, one canonical field, whatever the directions: two writers of one app
        # field overwrite each other on every pass (the app never holds both values), and with
        # two readers a change made elsewhere reaches the app through one of them only, so the
        # other never agrees with the app again.
        if app_field in seen_app_fields:
            problems.append(
                f"{where}.field: app field {app_field!r} is already mapped from "
                f"{seen_app_fields[app_field]!r}; map each app field from one canonical field"
            )
            continue
        seen_app_fields[app_field] = canonical
        if canonical == FULL_NAME:
            compiled += [
                FieldMapping("first_name", app_field, direction, spec, transform, part="first"),
                FieldMapping("last_name", app_field, direction, FIELDS["last_name"], transform, part="last"),
            ]
            continue
        compiled.append(
            FieldMapping(canonical, app_field, direction, spec, transform, values_in, values_out)
        )
    return AppMapping(app, tuple(compiled), ctx), problems


def _key(name: str) -> str:
    return f'"{name}"' if "." in name or " " in name else name
