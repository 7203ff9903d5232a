"""The channels file (`KEYWATCH_CHANNELS_FILE`, YAML): destinations and the routes to them.

Destinations (`channels:`) are named; each has a `type` — `email`, `slack`, `pagerduty` or
`webhook`. A secret (`url` of a Slack webhook, `routing_key`, a webhook `secret`) is given as
`<field>_setting: <settings name>` (a `KEYWATCH_*` secret, the default) or `<field>_file: path`;
a literal `<field>:` works too but puts a secret in the file. Routes (`routes:`) pick alerts by
kind, severity, provider and project and send them to channels, immediately or as a daily
digest. The example in `infra/channels.example.yaml` is loaded by the tests.

>>> cfg = parse_config({
...     "channels": {"fin": {"type": "webhook", "url": "http://127.0.0.1:9/h", "secret": "s3"}},
...     "routes": [{"name": "finance", "kinds": ["cost_spike"], "min_severity": "medium", "channels": ["fin"]}]})
>>> r = cfg.routes[0]; r.matches("cost_spike", "high", "openai", None), r.matches("cost_spike", "low", "openai", None)
(True, False)
>>> cfg.channels["fin"].secret
'<redacted>'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from keywatch.models.alerts import SEVERITIES

ChannelType = Literal["email", "slack", "pagerduty", "webhook"]
_SECRET_FIELDS = {"slack": ("url",), "pagerduty": ("routing_key",), "webhook": ("secret",), "email": ()}
_DEFAULT_SETTING = {("slack", "url"): "slack_webhook_url", ("pagerduty", "routing_key"): "pagerduty_routing_key",
                    ("webhook", "secret"): "webhook_secret"}


class ChannelsConfigError(ValueError):
    """The channels file is invalid; the message names the file and the entry."""


class Secret(str):
    """A str whose repr/str hide the value (so a config dump or log line never shows it)."""

    def __repr__(self) -> str:
        return "'<redacted>'"

    def __str__(self) -> str:
        return "<redacted>"

    @property
    def value(self) -> str:
        return str.__str__(self)


class ChannelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    name: str
    type: ChannelType
    # email
    to: list[str] = []
    cc: list[str] = []
    sender: str | None = Field(None, alias="from")
    subject_prefix: str = "[keywatch]"
    chart: bool = True
    # slack / webhook / pagerduty
    url: Any = None  # Secret for slack; plain for webhook; base URL for pagerduty
    routing_key: Any = None
    secret: Any = None
    headers: dict[str, str] = {}
    send_resolved: bool | None = None  # None: the channel's default (pagerduty/webhook yes)

    def secrets(self) -> list[str]:
        return [s.value for s in (self.url, self.routing_key, self.secret) if isinstance(s, Secret) and s.value]

    def __str__(self) -> str:
        return f"{self.type}:{self.name}"


class RateLimit(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    max: int = Field(30, ge=1)
    per_s: float = Field(3600.0, gt=0)


class Route(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    kinds: list[str] = []  # empty: every kind
    min_severity: Literal["low", "medium", "high", "critical"] = "low"
    max_severity: Literal["low", "medium", "high", "critical"] = "critical"
    providers: list[str] = []
    projects: list[str] = []
    channels: list[str] = Field(min_length=1)
    mode: Literal["immediate", "digest"] = "immediate"
    digest_at: str = Field("08:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="UTC time of the daily digest")
    rate_limit: RateLimit | None = RateLimit()
    send_resolved: bool = True
    stop: bool = False  # true: later routes do not see an alert this route matched

    @model_validator(mode="after")
    def _range(self) -> "Route":
        if SEVERITIES.index(self.min_severity) > SEVERITIES.index(self.max_severity):
            raise ValueError("min_severity is above max_severity")
        return self

    def matches(self, kind: str, severity: str, provider: str, project: str | None) -> bool:
        rank = SEVERITIES.index(severity) if severity in SEVERITIES else 0
        return ((not self.kinds or kind in self.kinds)
                and SEVERITIES.index(self.min_severity) <= rank <= SEVERITIES.index(self.max_severity)
                and (not self.providers or provider in self.providers)
                and (not self.projects or (project or "") in self.projects))


class ChannelsConfig(BaseModel):
    model_config = ConfigDict(frozen=True)
    channels: dict[str, ChannelSpec]
    routes: list[Route]

    def secrets(self) -> list[str]:
        return [s for c in self.channels.values() for s in c.secrets()]


def _resolve_secret(ctype: str, name: str, field: str, raw: dict[str, Any], settings, base: Path) -> Secret | None:
    literal, setting, file = raw.pop(field, None), raw.pop(f"{field}_setting", None), raw.pop(f"{field}_file", None)
    if sum(x is not None for x in (literal, setting, file)) > 1:
        raise ChannelsConfigError(f"channel {name!r}: give one of {field}, {field}_setting, {field}_file")
    if file is not None:
        path = (base / str(file)).expanduser()
        try:
            return Secret(path.read_text().strip())
        except OSError as exc:
            raise ChannelsConfigError(f"channel {name!r}: cannot read {field}_file {path}: {exc.strerror}") from None
    if literal is not None:
        return Secret(str(literal))
    setting = setting or _DEFAULT_SETTING.get((ctype, field))
    if setting is None or settings is None:
        return None
    if setting not in type(settings).model_fields:
        raise ChannelsConfigError(f"channel {name!r}: {field}_setting {setting!r} is not a keywatch setting")
    value = settings.secret(setting) if hasattr(getattr(settings, setting), "get_secret_value") else getattr(settings, setting)
    return Secret(value) if value else None


def parse_config(data: Any, settings=None, base: Path = Path(".")) -> ChannelsConfig:
    """Validate a parsed channels document; resolve secrets from `settings` or files."""
    if not isinstance(data, dict) or not isinstance(data.get("channels"), dict) or not isinstance(data.get("routes"), list):
        raise ChannelsConfigError("the channels file needs a `channels:` mapping and a `routes:` list")
    channels: dict[str, ChannelSpec] = {}
    for name, raw in data["channels"].items():
        if not isinstance(raw, dict) or raw.get("type") not in _SECRET_FIELDS:
            raise ChannelsConfigError(f"channel {name!r}: type must be one of {sorted(_SECRET_FIELDS)}")
        raw = dict(raw)
        for field in _SECRET_FIELDS[raw["type"]]:
            raw[field] = _resolve_secret(raw["type"], str(name), field, raw, settings, base)
        if raw["type"] == "pagerduty" and raw.get("url") is None and settings is not None:
            raw["url"] = settings.pagerduty_url
        try:
            spec = ChannelSpec(name=str(name), **raw)
        except ValidationError as exc:
            raise ChannelsConfigError(f"channel {name!r}: {_first(exc)}") from None
        if spec.type == "email" and not spec.to:
            raise ChannelsConfigError(f"channel {name!r}: email needs `to:`")
        if spec.type in ("slack", "webhook") and not spec.url:
            raise ChannelsConfigError(f"channel {name!r}: {spec.type} needs a url")
        if spec.type == "pagerduty" and not spec.routing_key:
            raise ChannelsConfigError(f"channel {name!r}: pagerduty needs a routing_key (KEYWATCH_PAGERDUTY_ROUTING_KEY)")
        channels[str(name)] = spec
    routes = []
    for i, raw in enumerate(data["routes"]):
        try:
            route = Route(**raw)
        except (ValidationError, TypeError) as exc:
            label = raw.get("name", i) if isinstance(raw, dict) else i
            raise ChannelsConfigError(f"route {label!r}: {_first(exc) if isinstance(exc, ValidationError) else exc}") from None
        for c in route.channels:
            if c not in channels:
                raise ChannelsConfigError(f"route {route.name!r}: unknown channel {c!r}")
            if route.mode == "digest" and channels[c].type == "pagerduty":
                raise ChannelsConfigError(f"route {route.name!r}: pagerduty cannot take a digest")
        routes.append(route)
    if len({r.name for r in routes}) != len(routes):
        raise ChannelsConfigError("route names must be unique")
    return ChannelsConfig(channels=channels, routes=routes)


def load_config(path: Path, settings=None) -> ChannelsConfig:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ChannelsConfigError(f"{path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ChannelsConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        return parse_config(data, settings, base=Path(path).parent)
    except ChannelsConfigError as exc:
        raise ChannelsConfigError(f"{path}: {exc}") from None


def _first(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}"
