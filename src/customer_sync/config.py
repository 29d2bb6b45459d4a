"""Configuration: one TOML file plus the environment, validated up front.

Sources in priority order (pydantic-settings): init arguments, environment variables
(`CUSTOMER_SYNC_DAEMON__STORE_URL=...`, nested with `__`), then the TOML file. Secrets appear in
the file only as `${ENV_VAR}` references, resolved from the environment at load time; a secret
field written literally is an error. `load_config` returns a `Config`: the validated settings
plus each app's compiled field map, filter and connector settings. Every problem is reported at
once, one line each: `FILE: key.path: what is wrong`.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from customer_sync.canonical import CUSTOM_TYPES, NormalizeContext, field_spec
from customer_sync.errors import ConfigError
from customer_sync.mapping.compile import AppMapping, Direction, compile_mapping
from customer_sync.mapping.filters import OPS, Filter, compile_filter
from customer_sync.sdk.connector import Connector, ConnectorSettings
from customer_sync.sdk.registry import load_connector

__all__ = [
    "AppConfig",
    "AppRuntime",
    "Config",
    "ConflictsConfig",
    "DaemonConfig",
    "FieldRule",
    "Settings",
    "load_config",
]

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
Rule = Literal["last_writer", "priority", "manual"]
DeletePolicy = Literal["ignore", "propagate", "unlink", "approve"]


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DaemonConfig(_Block):
    """`[daemon]`: where the store is, where to listen, defaults for every app."""

    store_url: str = "sqlite:///data/customer-sync.db"
    listen: str = "127.0.0.1:8080"
    public_url: str | None = Field(None, description="base URL vendors post webhooks to, if behind a proxy")
    poll_interval_s: float = Field(60.0, gt=0)
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    redact_logs: bool = True
    default_region: str | None = Field(None, description="phone region for numbers without +")
    batch_size: int = Field(500, ge=1, le=10_000)
    max_attempts: int = Field(8, ge=1, description="write attempts before a dead letter")
    normalize_workers: int | None = Field(
        None, ge=0, le=32,
        description="processes normalizing large polled pages; default 1 on 2+ cores, 0 turns it off",
    )
    list_in_worker: bool | None = Field(
        None,
        description="list apps whose connector allows it in a worker process; default on when "
                    "there is a normalizing worker",
    )
    poll_slice_s: float = Field(
        30.0, gt=0,
        description="a poll stops taking pages after this long and goes on in the next round, "
                    "so one long listing does not hold up the other apps' writes",
    )


class Condition(_Block):
    """One filter condition over a canonical field."""

    field: str
    op: Literal[OPS]  # type: ignore[valid-type]
    value: Any = None


class AppConfig(_Block):
    """`[apps.NAME]`: one configured app."""

    connector: str
    enabled: bool = True
    poll_interval_s: float | None = Field(None, gt=0)
    settings: dict[str, Any] = Field(default_factory=dict)
    fields: dict[str, Any] | None = None  # None: the connector's default mapping.toml
    direction: Direction = "both"
    filters: list[Condition] = Field(default_factory=list)
    on_delete: DeletePolicy = "unlink"
    default_region: str | None = None
    reconcile_interval_s: float | None = Field(
        None, ge=0,
        description="compare the whole app with the store this often (hard deletes, edits saved "
                    "with old modified times); 0 turns it off; default: the connector's",
    )


class FieldRule(_Block):
    """A conflict rule: `priority` takes the first app of `apps` that holds a value."""

    rule: Rule
    apps: list[str] = Field(default_factory=list)


class ConflictsConfig(_Block):
    """`[conflicts]`: the default rule and per-field rules."""

    default: Rule = "last_writer"
    priority: list[str] = Field(default_factory=list)
    fields: dict[str, FieldRule] = Field(default_factory=dict)

    def rule_for(self, field: str) -> FieldRule:
        if field in self.fields:
            return self.fields[field]
        return FieldRule(rule=self.default, apps=self.priority)


class _TomlData(PydanticBaseSettingsSource):
    """The TOML file, already parsed and with `${ENV}` references resolved."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self.data = data

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.data)


class Settings(BaseSettings):
    """The root settings: `[daemon]`, `[custom_fields]`, `[conflicts]`, `[apps.*]`."""

    model_config = SettingsConfigDict(
        env_prefix="CUSTOMER_SYNC_", env_nested_delimiter="__", extra="forbid"
    )
    daemon: DaemonConfig = Field(default_factory=DaemonConfig)
    custom_fields: dict[str, Literal[tuple(CUSTOM_TYPES)]] = Field(default_factory=dict)  # type: ignore[valid-type]
    conflicts: ConflictsConfig = Field(default_factory=ConflictsConfig)
    apps: dict[str, AppConfig] = Field(default_factory=dict)

    @classmethod
    def from_toml_data(cls, data: dict[str, Any]) -> Settings:
        """Settings from parsed TOML, with the environment taking precedence over it."""

        class _Loaded(cls):  # type: ignore[valid-type,misc]
            @classmethod
            def settings_customise_sources(
                cls,
                settings_cls: type[BaseSettings],
                init_settings: PydanticBaseSettingsSource,
                env_settings: PydanticBaseSettingsSource,
                dotenv_settings: PydanticBaseSettingsSource,
                file_secret_settings: PydanticBaseSettingsSource,
            ) -> tuple[PydanticBaseSettingsSource, ...]:
                return init_settings, env_settings, _TomlData(settings_cls, data)

        loaded = _Loaded()
        return cls.model_validate(loaded.model_dump())


@dataclass(frozen=True)
class AppRuntime:
    """Everything the engine needs about one app, validated."""

    name: str
    config: AppConfig
    connector_cls: type[Connector]  # type: ignore[type-arg]
    connector_settings: ConnectorSettings
    mapping: AppMapping
    filter: Filter

    @property
    def poll_interval_s(self) -> float | None:
        return self.config.poll_interval_s

    def make_connector(self) -> Connector:  # type: ignore[type-arg]
        return self.connector_cls(self.connector_settings, app=self.name)


@dataclass(frozen=True)
class Config:
    """A loaded, validated configuration."""

    path: Path | None
    settings: Settings
    apps: Mapping[str, AppRuntime]

    @property
    def daemon(self) -> DaemonConfig:
        return self.settings.daemon

    @property
    def conflicts(self) -> ConflictsConfig:
        return self.settings.conflicts

    def poll_interval_s(self, app: str) -> float:
        return self.apps[app].poll_interval_s or self.daemon.poll_interval_s

    def reconcile_interval_s(self, app: str) -> float | None:
        """How often the app is reconciled (None or 0: never): its own setting, else what its
        connector declares."""
        rt = self.apps[app]
        if rt.config.reconcile_interval_s is not None:
            return rt.config.reconcile_interval_s or None
        return rt.connector_cls.reconcile_interval_s


def load_config(
    path: str | Path | None = None,
    *,
    data: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    connectors: Mapping[str, type[Connector]] | None = None,  # type: ignore[type-arg]
) -> Config:
    """Load and validate a config file (or an already-parsed `data` dict, for tests).

    `connectors` adds connector classes by name besides the installed plugins (tests).

    Raises:
        ConfigError: with one problem line per error, each naming the file and the key path.
    """
    env = os.environ if env is None else env
    label = str(path) if path is not None else "<config>"
    if data is None:
        if path is None:
            raise ConfigError("no config file given (use --config FILE or CUSTOMER_SYNC_CONFIG)")
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{label}: file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{label}: not valid TOML: {exc}") from None
    else:
        raw = dict(data)

    problems: list[str] = []
    env_paths: set[tuple[str, ...]] = set()
    resolved = _resolve_env(raw, (), env, env_paths, problems)
    # The settings keep each app's `settings` block as written (with ${VAR} references, not
    # their values), so printing or dumping the config never shows a secret. Connectors get
    # the resolved values, into their own SecretStr fields.
    shown = {**resolved}
    if isinstance(raw.get("apps"), dict) and isinstance(resolved.get("apps"), dict):
        shown["apps"] = {
            name: ({**app, "settings": raw["apps"][name].get("settings", {})}
                   if isinstance(app, dict) and isinstance(raw["apps"].get(name), dict) else app)
            for name, app in resolved["apps"].items()
        }
    try:
        settings = Settings.from_toml_data(shown)
    except ValidationError as exc:
        problems += _explain(exc)
        problems += _connector_problems(raw, connectors or {})
        raise ConfigError("invalid config", problems=[f"{label}: {p}" for p in problems]) from None

    apps: dict[str, AppRuntime] = {}
    for name, app in settings.apps.items():
        runtime = _compile_app(name, app, settings, resolved, env_paths, problems, connectors or {})
        if runtime is not None:
            apps[name] = runtime
    problems += _check_conflicts(settings)
    if not settings.apps:
        problems.append("apps: no app configured (add at least two [apps.NAME] tables)")
    if problems:
        raise ConfigError("invalid config", problems=[f"{label}: {p}" for p in problems])
    return Config(Path(path) if path is not None else None, settings, apps)


def _connector_problems(raw: Mapping[str, Any], extra: Mapping[str, type]) -> list[str]:
    """Unknown connectors, checked even when the rest of the file did not validate."""
    out = []
    apps = raw.get("apps")
    for name, app in (apps.items() if isinstance(apps, dict) else ()):
        name_of = app.get("connector") if isinstance(app, dict) else None
        if isinstance(name_of, str) and name_of not in extra:
            try:
                load_connector(name_of)
            except ConfigError as exc:
                out.append(f"apps.{name}.connector: {exc}")
    return out


def _resolve_env(
    node: Any,
    where: tuple[str, ...],
    env: Mapping[str, str],
    env_paths: set[tuple[str, ...]],
    problems: list[str],
) -> Any:
    if isinstance(node, dict):
        return {k: _resolve_env(v, (*where, k), env, env_paths, problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve_env(v, (*where, str(i)), env, env_paths, problems) for i, v in enumerate(node)]
    if isinstance(node, str) and "${" in node:
        replaced = 0

        def sub(m: re.Match[str]) -> str:
            nonlocal replaced
            if m.group(1) not in env:
                problems.append(f"{_path(where)}: environment variable {m.group(1)} is not set")
                return ""
            replaced += 1
            return env[m.group(1)]

        text = _ENV_REF.sub(sub, node)
        if "${" in text:
            problems.append(f'{_path(where)}: not a valid reference; write "${{ENV_VAR}}" (letters, digits, _)')
            return ""
        if replaced or _ENV_REF.search(node):
            env_paths.add(where)
        return text
    return node


def _path(parts: tuple[str | int, ...]) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int) or (isinstance(p, str) and p.isdigit()):
            out += f"[{p}]"
        else:
            p = str(p)
            out += ("." if out else "") + (f'"{p}"' if "." in p else p)
    return out


def _explain(exc: ValidationError, prefix: tuple[str | int, ...] = ()) -> list[str]:
    out = []
    for err in exc.errors():
        loc = (*prefix, *err["loc"])
        # pydantic puts the literal's name into loc for Literal-in-dict errors; drop noise
        loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("literal[")))
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = err["msg"]
        out.append(f"{_path(loc)}: {msg}")
    return out


def _default_mapping(connector_cls: type) -> dict[str, Any] | None:
    package = connector_cls.__module__.rpartition(".")[0] or connector_cls.__module__
    try:
        text = (resources.files(package) / "mapping.toml").read_text(encoding="utf-8")
    except (FileNotFoundError, ModuleNotFoundError, NotADirectoryError):
        return None
    return tomllib.loads(text).get("fields")


def _compile_app(
    name: str,
    app: AppConfig,
    settings: Settings,
    resolved: Mapping[str, Any],
    env_paths: set[tuple[str, ...]],
    problems: list[str],
    extra: Mapping[str, type[Connector]],  # type: ignore[type-arg]
) -> AppRuntime | None:
    where = f"apps.{name}"
    try:
        cls = extra.get(app.connector) or load_connector(app.connector)
    except ConfigError as exc:
        problems.append(f"{where}.connector: {exc}")
        return None
    raw_settings = resolved.get("apps", {}).get(name, {}).get("settings", {})
    try:
        conn_settings = cls.settings_model.model_validate(raw_settings)
    except ValidationError as exc:
        problems += _explain(exc, ("apps", name, "settings"))
        return None
    for fname, finfo in cls.settings_model.model_fields.items():
        is_secret = finfo.annotation is SecretStr or "SecretStr" in str(finfo.annotation)
        if is_secret and fname in raw_settings and ("apps", name, "settings", fname) not in env_paths:
            problems.append(
                f"{where}.settings.{fname}: secrets come from the environment only; "
                f'write {fname} = "${{ENV_VAR}}" and set ENV_VAR'
            )
    entries = app.fields if app.fields is not None else _default_mapping(cls)
    if entries is None:
        problems.append(f"{where}.fields: required (connector {app.connector!r} ships no default map)")
        return None
    ctx = NormalizeContext(default_region=app.default_region or settings.daemon.default_region)
    mapping, map_problems = compile_mapping(
        name, entries, custom_fields=settings.custom_fields, default_direction=app.direction, ctx=ctx
    )
    problems += map_problems
    flt, flt_problems = compile_filter(
        name, [c.model_dump() for c in app.filters], custom_fields=settings.custom_fields
    )
    problems += flt_problems
    if map_problems or flt_problems:
        return None
    return AppRuntime(name, app, cls, conn_settings, mapping, flt)


def _check_conflicts(settings: Settings) -> list[str]:
    problems = []
    apps = set(settings.apps)
    for i, app in enumerate(settings.conflicts.priority):
        if app not in apps:
            problems.append(f"conflicts.priority[{i}]: {app!r} is not a configured app")
    if settings.conflicts.default == "priority" and not settings.conflicts.priority:
        problems.append('conflicts.priority: required when default = "priority" (list of apps)')
    for fname, rule in settings.conflicts.fields.items():
        where = f"conflicts.fields.{_path((fname,))}"
        if field_spec(fname, settings.custom_fields) is None:
            problems.append(f"{where}: unknown canonical field {fname!r}")
        for i, app in enumerate(rule.apps):
            if app not in apps:
                problems.append(f"{where}.apps[{i}]: {app!r} is not a configured app")
        if rule.rule == "priority" and not rule.apps:
            problems.append(f"{where}.apps: required for rule = \"priority\"")
    return problems
