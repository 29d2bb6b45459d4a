"""Configuration: one TOML file plus the environment, validated up front.

Sources in priority order (pydantic-settings): init arguments, environment variables
(`CUSTOMER_SYNC_DAEMON__STORE_URL=...`, nested with `__`), then the TOML file. Secrets appear in
the file only as `${ENV_VAR}` references, resolved from the environment at load time; a secret
field written literally is an error. `load_config` returns a `Config`: the validated settings
plus each app's compiled field map, filter and connector settings. Every problem is reported at
once, one line each: `FILE: key.path: what is wrong`.

Values are checked for what they will be used as, so that `check` refuses what `run` would
trip over: durations (seconds, or text with a unit: `"15s"`, `"10m"`, `"180d"`; see
`durations`), the store URL's scheme, the listen address, URLs, phone regions, and connector
settings through their own types (`sdk.VendorUrl` refuses a link-local or cloud metadata
address unless the app sets `allow_private_urls`). Booleans written in the file must be TOML
booleans: `enabled = "yes"` is an error, not a truthy string.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from customer_sync.canonical import CUSTOM_TYPES, NormalizeContext, field_spec
from customer_sync.durations import Seconds
from customer_sync.errors import ConfigError, StoreError
from customer_sync.mapping.compile import AppMapping, Direction, compile_mapping
from customer_sync.mapping.filters import OPS, Filter, compile_filter
from customer_sync.sdk.connector import Capability, Connector, ConnectorSettings
from customer_sync.sdk.registry import load_connector
from customer_sync.sdk.settings import ALLOW_PRIVATE_URLS, DEFAULT_MAX_RETRY_AFTER_S

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
FieldRuleName = Literal["last_writer", "priority", "manual", "consent"]
DeletePolicy = Literal["ignore", "propagate", "unlink", "approve"]


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid")


_HOST_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def _check_region(value: str) -> str:
    import phonenumbers  # here: only a config that sets a region pays for it

    code = value.strip().upper()
    # "001" is phonenumbers' non-geographic pseudo-region: no national number is read in it.
    if code == "001" or code not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(
            f"{value!r} is not a phone region; write an ISO 3166-1 alpha-2 code such as US or DE"
        )
    return code


def _check_store_url(value: str) -> str:
    # The store's own parser, so that the loader and the store never disagree on what is valid.
    from customer_sync.store.db import _parse

    try:
        _parse(value)
    except StoreError as exc:
        raise ValueError(str(exc)) from None
    return value


def _check_listen(value: str) -> str:
    """`HOST:PORT`; an IPv6 host may be bracketed. Returns it as the API server splits it
    (at the last colon, host without brackets)."""
    host, colon, port = value.strip().rpartition(":")
    if not colon or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError('must be HOST:PORT with a port from 1 to 65535, e.g. "127.0.0.1:8080"')
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host and not _is_ip(host) and not _HOST_NAME.fullmatch(host):
        raise ValueError('the host must be a name or an IP address, e.g. "0.0.0.0:8080"')
    return f"{host}:{int(port)}"


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _check_public_url(value: str) -> str:
    import httpx  # here: only a config that sets a public URL pays for it

    try:
        url = httpx.URL(value.strip())
    except httpx.InvalidURL:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise ValueError('must be an http(s) URL with a host, e.g. "https://sync.example.com"')
    if url.query or url.fragment:
        raise ValueError("must be a base URL, without a query or fragment")
    return value.strip()


Region = Annotated[str, AfterValidator(_check_region)]


class DaemonConfig(_Block):
    """`[daemon]`: where the store is, where to listen, defaults for every app."""

    store_url: Annotated[str, AfterValidator(_check_store_url)] = "sqlite:///data/customer-sync.db"
    listen: Annotated[str, AfterValidator(_check_listen)] = "127.0.0.1:8080"
    public_url: Annotated[str, AfterValidator(_check_public_url)] | None = Field(
        None, description="base URL vendors post webhooks to, if behind a proxy"
    )
    poll_interval_s: Seconds = Field(60.0, gt=0)
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    redact_logs: bool = True
    default_region: Region | None = Field(None, description="phone region for numbers without +")
    batch_size: int = Field(500, ge=1, le=10_000)
    max_attempts: int = Field(8, ge=1, description="write attempts before a dead letter")
    normalize_workers: int | None = Field(
        None, ge=0, le=32,
        description="processes normalizing large polled pages; default 0 (none): see docs/configuration.md",
    )
    list_in_worker: bool | None = Field(
        None,
        description="list apps whose connector allows it in a worker process; default on when "
                    "there is a normalizing worker",
    )
    poll_slice_s: Seconds = Field(
        30.0, gt=0,
        description="a poll stops taking pages after this long and goes on in the next round, "
                    "so one long listing does not hold up the other apps' writes",
    )
    max_retry_after_s: Seconds = Field(
        DEFAULT_MAX_RETRY_AFTER_S, gt=0,
        description="longest vendor Retry-After a call waits for; a longer one parks the app",
    )
    coalesce_s: Seconds = Field(
        0.25, ge=0,
        description="the daemon starts a round at most this often: the webhooks of a burst are "
                    "processed together (one read of their records from the app), not one "
                    "round each; 0 starts a round at every wake",
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
    poll_interval_s: Seconds | None = Field(None, gt=0)
    settings: dict[str, Any] = Field(default_factory=dict)
    fields: dict[str, Any] | None = None  # None: the connector's default mapping.toml
    direction: Direction = "both"
    filters: list[Condition] = Field(default_factory=list)
    on_delete: DeletePolicy = "unlink"
    default_region: Region | None = None
    allow_private_urls: bool = Field(
        False, description="let connector URLs point at link-local or cloud metadata addresses"
    )
    max_retry_after_s: Seconds | None = Field(None, gt=0)  # None: [daemon]'s
    reconcile_interval_s: Seconds | None = Field(
        None, ge=0,
        description="compare the whole app with the store this often (hard deletes, edits saved "
                    "with old modified times); 0 turns it off; default: the connector's",
    )
    normalize_in_apps: bool = Field(
        False,
        description="write the normalized form (E.164 phones, handles, lower-cased emails) back "
                    "to a record of this app that holds a valid value written differently",
    )
    merge_in_app: bool = Field(
        False,
        description="merge duplicates inside this app (records of one customer, such as a "
                    "double import) with the app's own merge; needs a connector that can merge",
    )
    requires_email: bool | None = Field(
        None,
        description="a record of this app is an email address (an email list): a customer "
                    "without one is never created here, and a record's own address is never "
                    "rewritten; default: the connector's REQUIRES_EMAIL capability",
    )


class FieldRule(_Block):
    """A conflict rule: `priority` takes the first app of `apps` that holds a value;
    `consent` (consent fields only) keeps the most restrictive value, which only a newer value
    from an app of `consent_source` lifts."""

    rule: FieldRuleName
    apps: list[str] = Field(default_factory=list)
    consent_source: list[str] | None = None  # None: [conflicts]'s


# The consent field, decided by the `consent` rule unless [conflicts.fields] names it.
CONSENT_FIELD = "email_consent"


class ConflictsConfig(_Block):
    """`[conflicts]`: the default rule, per-field rules, and the apps that collect consent."""

    default: Rule = "last_writer"
    priority: list[str] = Field(default_factory=list)
    consent_source: list[str] = Field(default_factory=list)
    fields: dict[str, FieldRule] = Field(default_factory=dict)

    def rule_for(self, field: str) -> FieldRule:
        """The rule deciding `field`: its own, else `consent` for the consent field, else the
        default (with the `priority` list)."""
        rule = self.fields.get(field)
        if rule is not None:
            if rule.rule == "consent" and rule.consent_source is None:
                return _shared_rule("consent", rule.apps, self.consent_source)
            return rule
        if field == CONSENT_FIELD:
            return _shared_rule("consent", (), self.consent_source)
        return _shared_rule(self.default, self.priority, None)


# Rules made up by `rule_for`, shared by content: it is asked for on every field of every
# record merged, and building a model each time cost more than the decision it serves.
_SHARED_RULES: dict[tuple[Any, ...], FieldRule] = {}


def _shared_rule(rule: str, apps: Any, consent_source: Any) -> FieldRule:
    key = (rule, tuple(apps), None if consent_source is None else tuple(consent_source))
    found = _SHARED_RULES.get(key)
    if found is None:
        found = _SHARED_RULES[key] = FieldRule.model_construct(
            rule=rule, apps=list(apps), consent_source=None if consent_source is None else list(consent_source))
    return found


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
    max_retry_after_s: float = DEFAULT_MAX_RETRY_AFTER_S  # the app's, else [daemon]'s

    @property
    def poll_interval_s(self) -> float | None:
        return self.config.poll_interval_s

    @property
    def requires_email(self) -> bool:
        """Whether a record of this app is an email address (an email list): the app's own
        `requires_email`, else its connector's `Capability.REQUIRES_EMAIL`."""
        if self.config.requires_email is not None:
            return self.config.requires_email
        return Capability.REQUIRES_EMAIL in self.connector_cls.capabilities

    def make_connector(self) -> Connector:  # type: ignore[type-arg]
        """A new connector for this app, with its settings and its `max_retry_after_s`."""
        connector = self.connector_cls(self.connector_settings, app=self.name)
        connector.max_retry_after_s = self.max_retry_after_s
        return connector


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
    problems += _loose_booleans(DaemonConfig, raw.get("daemon"), ("daemon",), env_paths)
    apps_raw = raw.get("apps")
    for name, app_raw in (apps_raw.items() if isinstance(apps_raw, dict) else ()):
        problems += _loose_booleans(AppConfig, app_raw, ("apps", name), env_paths)
    try:
        settings = Settings.from_toml_data(shown)
    except ValidationError as exc:
        problems += _not_yet_named(_explain(exc), problems)
        problems += _connector_problems(raw, connectors or {})
        raise ConfigError("invalid config", problems=_blamed(problems, label, raw)) from None

    apps: dict[str, AppRuntime] = {}
    for name, app in settings.apps.items():
        runtime = _compile_app(name, app, settings, resolved, env_paths, problems, connectors or {})
        if runtime is not None:
            apps[name] = runtime
    problems += _check_conflicts(settings)
    if not settings.apps:
        problems.append("apps: no app configured (add at least two [apps.NAME] tables)")
    if problems:
        raise ConfigError("invalid config", problems=_blamed(problems, label, raw))
    return Config(Path(path) if path is not None else None, settings, apps)


_ENV_PREFIX = "CUSTOMER_SYNC_"


def _blamed(problems: list[str], label: str, raw: Mapping[str, Any]) -> list[str]:
    """Each problem (`key.path: what`) prefixed with where its value came from: the
    environment variable that set the key (`CUSTOMER_SYNC_DAEMON__POLL_INTERVAL_S
    (environment): ...`), else the file. A variable that brings a block the file does not hold
    (`CUSTOMER_SYNC_APPS__X__ENABLED` makes an app `x`) is blamed for that block's problems too."""
    blames: list[tuple[str, str]] = []  # (key path the variable answers for, variable)
    for var, parts in _env_overrides(os.environ):
        held: Any = raw
        for i, part in enumerate(parts):
            if not isinstance(held, Mapping) or part not in held:
                parts = parts[: i + 1]  # the block the file does not hold comes from the variable
                break
            held = held[part]
        blames.append((_path(parts), var))
    out = []
    for problem in problems:
        key = problem.partition(": ")[0]
        found = [(len(path), var) for path, var in blames
                 if key == path or key.startswith((f"{path}.", f"{path}["))]
        if found:
            longest = max(length for length, _ in found)
            names = ", ".join(sorted(var for length, var in found if length == longest))
            out.append(f"{names} (environment): {problem}")
        else:
            out.append(f"{label}: {problem}")
    return out


def _env_overrides(environ: Mapping[str, str]) -> list[tuple[str, tuple[str, ...]]]:
    """The environment variables the settings read (`CUSTOMER_SYNC_<SECTION>[__<KEY>...]`, any
    case, as pydantic-settings reads them), each with the key paths it sets: one, or one per
    key of a JSON object (`CUSTOMER_SYNC_DAEMON='{"listen": ...}'`)."""
    out = []
    for var, value in environ.items():
        if not var.upper().startswith(_ENV_PREFIX):
            continue
        parts = tuple(part.lower() for part in var[len(_ENV_PREFIX):].split("__"))
        if parts[0] in Settings.model_fields and all(parts):
            out += [(var, path) for path in _leaves(parts, value)]
    return out


def _leaves(parts: tuple[str, ...], value: str) -> list[tuple[str, ...]]:
    try:
        decoded = json.loads(value)
    except ValueError:
        return [parts]
    if not isinstance(decoded, dict) or not decoded:
        return [parts]
    return [(*parts, str(key)) for key in decoded]


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
        elif err["type"] == "value_error" and "error" in err.get("ctx", {}):
            msg = str(err["ctx"]["error"])  # a validator's own words, without "Value error, "
        else:
            msg = err["msg"]
        out.append(f"{_path(loc)}: {msg}")
    return out


def _is_bool_field(annotation: Any) -> bool:
    if annotation is bool:
        return True
    if get_origin(annotation) in (Union, types.UnionType):
        return {a for a in get_args(annotation) if a is not type(None)} == {bool}
    return False


def _loose_booleans(
    model: type[BaseModel],
    block: Any,
    where: tuple[str, ...],
    env_paths: set[tuple[str, ...]],
) -> list[str]:
    """Boolean keys of `block` written as something else than a TOML boolean.

    pydantic would read "yes", "off" or 1 as a boolean; in a file with real booleans such a
    value is a mistake. A `${VAR}` reference is text by nature and is left to pydantic.
    """
    if not isinstance(block, Mapping):
        return []
    out = []
    for key, value in block.items():
        field = model.model_fields.get(key)
        if field is None or isinstance(value, bool) or (*where, key) in env_paths:
            continue
        if _is_bool_field(field.annotation):
            kind = "a string" if isinstance(value, str) else type(value).__name__
            out.append(f"{_path((*where, key))}: must be true or false (a TOML boolean, no "
                       f"quotes), not {kind}")
    return out


def _not_yet_named(explained: list[str], problems: list[str]) -> list[str]:
    """The pydantic problems on keys no earlier problem names: a key that is a string instead
    of a boolean, or whose `${VAR}` is unset, gets one line, not a second one from pydantic."""
    named = {line.partition(": ")[0] for line in problems}
    return [line for line in explained if line.partition(": ")[0] not in named]


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
    loose = _loose_booleans(cls.settings_model, raw_settings, ("apps", name, "settings"), env_paths)
    problems += loose
    entries = app.fields if app.fields is not None else _default_mapping(cls)
    if entries is None:
        problems.append(f"{where}.fields: required (connector {app.connector!r} ships no default map)")
        return None
    ctx = NormalizeContext(default_region=app.default_region or settings.daemon.default_region)
    mapping, map_problems = compile_mapping(
        name, entries, custom_fields=settings.custom_fields, default_direction=app.direction, ctx=ctx
    )
    problems += map_problems
    if not map_problems:
        # a connector that reads only the fields it is told to (HubSpot's `properties`) reads
        # the ones this app's field map names, unless its settings name them
        raw_settings = cls.settings_for_fields(raw_settings, mapping.app_field_order)
    try:
        conn_settings = cls.settings_model.model_validate(
            raw_settings, context={ALLOW_PRIVATE_URLS: app.allow_private_urls}
        )
    except ValidationError as exc:
        problems += _not_yet_named(_explain(exc, ("apps", name, "settings")), problems)
        return None
    for fname, finfo in cls.settings_model.model_fields.items():
        is_secret = finfo.annotation is SecretStr or "SecretStr" in str(finfo.annotation)
        if is_secret and fname in raw_settings and ("apps", name, "settings", fname) not in env_paths:
            problems.append(
                f"{where}.settings.{fname}: secrets come from the environment only; "
                f'write {fname} = "${{ENV_VAR}}" and set ENV_VAR'
            )
    flt, flt_problems = compile_filter(
        name, [c.model_dump() for c in app.filters], custom_fields=settings.custom_fields
    )
    problems += flt_problems
    cannot_merge = app.merge_in_app and Capability.MERGE not in cls.capabilities
    if cannot_merge:
        problems.append(f"{where}.merge_in_app: connector {app.connector!r} cannot merge records "
                        "in the app (no MERGE capability)")
    if map_problems or flt_problems or loose or cannot_merge:
        return None
    max_retry_after_s = (
        app.max_retry_after_s if app.max_retry_after_s is not None
        else settings.daemon.max_retry_after_s
    )
    return AppRuntime(name, app, cls, conn_settings, mapping, flt, max_retry_after_s)


def _check_conflicts(settings: Settings) -> list[str]:
    problems = []
    apps = set(settings.apps)
    for i, app in enumerate(settings.conflicts.priority):
        if app not in apps:
            problems.append(f"conflicts.priority[{i}]: {app!r} is not a configured app")
    for i, app in enumerate(settings.conflicts.consent_source):
        if app not in apps:
            problems.append(f"conflicts.consent_source[{i}]: {app!r} is not a configured app")
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
        spec = field_spec(fname, settings.custom_fields)
        if rule.rule == "consent" and spec is not None and spec.kind != "consent":
            problems.append(f"{where}.rule: \"consent\" decides consent fields only "
                            f"(such as {CONSENT_FIELD})")
        if rule.consent_source is not None and rule.rule != "consent":
            problems.append(f"{where}.consent_source: applies to rule = \"consent\" only")
        for i, app in enumerate(rule.consent_source or ()):
            if app not in apps:
                problems.append(f"{where}.consent_source[{i}]: {app!r} is not a configured app")
    return problems
