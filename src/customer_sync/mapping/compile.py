"""Compile an app's field map (TOML data) into functions between app fields and canonical values.

A field map is keyed by canonical field name; each entry names the app field, the direction
(`both`, `to_app`, `from_app`), an optional named transform and an optional enum value map
(app value -> canonical value); an app field is named by one entry only. Inbound, a value goes
app value -> enum map -> transform -> canonical normalization. Outbound, canonical value ->
transform -> reversed enum map.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from customer_sync.canonical import FieldSpec, NormalizeContext, field_spec, is_set_field, normalize_value
from customer_sync.errors import MappingError
from customer_sync.mapping.transforms import TRANSFORMS, Transform

__all__ = ["AppMapping", "Direction", "FieldMapping", "compile_mapping"]

Direction = Literal["both", "to_app", "from_app"]


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

    @property
    def inbound(self) -> bool:
        return self.direction != "to_app"

    @property
    def outbound(self) -> bool:
        return self.direction != "from_app"

    def to_canonical(self, value: Any, ctx: NormalizeContext) -> Any:
        # A value-map hit is already a normalized canonical value: it skips the transform, so
        # that the reverse lookup in to_app gives the app back exactly its own value.
        if self.values_in is not None and isinstance(value, str | int | bool) and str(value) in self.values_in:
            return self.values_in[str(value)]
        if self.transform is not None:
            try:
                value = self.transform.to_canonical(value)
            except (ValueError, TypeError, OverflowError, OSError) as exc:
                raise MappingError(
                    f"{self.canonical}: transform {self.transform.name!r} failed ({type(exc).__name__})",
                    field=self.canonical,
                ) from None
        return normalize_value(self.spec, value, ctx)

    def to_app(self, value: Any) -> Any:
        if self.values_out is not None and isinstance(value, str | int | float | bool) and value in self.values_out:
            return self.values_out[value]
        if self.transform is not None and value is not None:
            value = self.transform.to_app(value)
        return value


@dataclass(frozen=True)
class AppMapping:
    """The compiled field map of one app."""

    app: str
    fields: tuple[FieldMapping, ...]
    ctx: NormalizeContext = NormalizeContext()
    inbound: tuple[FieldMapping, ...] = field(init=False)
    outbound: tuple[FieldMapping, ...] = field(init=False)
    by_canonical: Mapping[str, FieldMapping] = field(init=False)
    set_fields: frozenset[str] = field(init=False)  # inbound fields merged element by element
    app_field_order: tuple[str, ...] = field(init=False)  # every mapped app field, in map order

    def __post_init__(self) -> None:
        object.__setattr__(self, "inbound", tuple(f for f in self.fields if f.inbound))
        object.__setattr__(self, "outbound", tuple(f for f in self.fields if f.outbound))
        object.__setattr__(self, "by_canonical", {f.canonical: f for f in self.fields})
        object.__setattr__(self, "set_fields", frozenset(f.canonical for f in self.inbound if is_set_field(f.spec)))
        object.__setattr__(self, "app_field_order", tuple(f.app_field for f in self.fields))

    @property
    def app_fields(self) -> frozenset[str]:
        return frozenset(f.app_field for f in self.fields)

    def to_canonical(self, app_fields: Mapping[str, Any]) -> tuple[dict[str, Any], list[MappingError]]:
        """Canonical values for the inbound fields present in `app_fields`, and the per-field
        errors. A field the record does not carry is absent (not a change); a bad value is an
        error for that field only."""
        values: dict[str, Any] = {}
        errors: list[MappingError] = []
        for fm in self.inbound:
            if fm.app_field not in app_fields:
                continue
            try:
                values[fm.canonical] = fm.to_canonical(app_fields[fm.app_field], self.ctx)
            except MappingError as exc:
                exc.app = self.app
                exc.raw_value = app_fields[fm.app_field]  # what the app sent, for the operator
                errors.append(exc)
        return values, errors

    def to_app(self, canonical: Mapping[str, Any]) -> dict[str, Any]:
        """App fields for the outbound canonical fields present in `canonical`."""
        return {
            fm.app_field: fm.to_app(canonical[fm.canonical])
            for fm in self.outbound
            if fm.canonical in canonical
        }


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
    for canonical, raw in entries.items():
        where = f"apps.{app}.fields.{_key(canonical)}"
        spec = field_spec(canonical, custom_fields)
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
        compiled.append(
            FieldMapping(canonical, app_field, direction, spec, transform, values_in, values_out)
        )
    return AppMapping(app, tuple(compiled), ctx), problems


def _key(name: str) -> str:
    return f'"{name}"' if "." in name or " " in name else name
