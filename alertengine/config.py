"""Settings: defaults, then ``alertengine.toml``, then ``ALERTENGINE_<NAME>`` variables, then CLI flags."""

from __future__ import annotations

import ipaddress
import os
import socket
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError
from .net.urlpolicy import UrlPolicy

ENV_PREFIX = "ALERTENGINE_"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class Setting:
    name: str
    type: type
    default: Any
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", Path, Path("alertengine-data"),
            "Directory for the database, the ledger key and per-install secrets (created if missing)."),
    Setting("database_url", str, "",
            "Empty: the SQLite file in data_dir. postgresql://user:password@host:port/dbname: a PostgreSQL database "
            "instead, shared by every appliance node (secret when it holds a password; see docs/postgresql.md)."),
    Setting("node_name", str, "",
            "With database_url: this node's name among the nodes sharing the database (default: hostname:port)."),
    Setting("node_url", str, "",
            "With database_url: the URL the other nodes forward requests to while this node leads "
            "(default: http(s)://host:port)."),
    Setting("lease_ttl", float, 6.0,
            "With database_url: seconds a leader's lease lasts unrenewed; another node takes over within "
            "about 7/6 of it after the leader dies."),
    Setting("host", str, "127.0.0.1", "Address the web server listens on."),
    Setting("port", int, 8080, "TCP port the web server listens on."),
    Setting("public_url", str, "", "Base URL people and chat services reach this appliance at (default: http://host:port)."),
    Setting("tls_cert_file", str, "", "PEM certificate (chain) to serve HTTPS with; needs tls_key_file."),
    Setting("tls_key_file", str, "", "PEM private key of tls_cert_file (secret: keep it mode 0600)."),
    Setting("tls_self_signed", bool, False,
            "Without tls_cert_file: make a self-signed certificate in <data_dir>/tls at first start and serve HTTPS."),
    Setting("trusted_proxies", str, "",
            "Comma-separated addresses or CIDRs of reverse proxies whose X-Forwarded-For and X-Forwarded-Proto "
            "are believed; empty: none, the connecting address is the client."),
    Setting("log_level", str, "info", "Log level: debug, info, warning or error."),
    Setting("log_format", str, "text",
            "Log lines on standard error: text, or json (one object per line: ts, level, logger, message, exc)."),
    Setting("checkpoint_interval", float, 1.0,
            "Seconds between signed ledger checkpoints while entries are being appended."),
    Setting("writer_batch_max", int, 1000, "Most write requests the single writer commits in one transaction."),
    Setting("checkpoint_sink", str, "",
            "Where every signed checkpoint is also appended: file:/absolute/path, syslog, or an http(s) URL to POST to."),
    Setting("witnesses", str, "",
            "Witnesses that cosign checkpoints: comma-separated '<URL> <witness key>' pairs (see ledger-format.md 4.9)."),
    Setting("witness_interval", float, 60.0, "Most seconds between asking the witnesses to cosign a grown ledger."),
    Setting("outbound_allow_cidrs", str, "",
            "Comma-separated CIDRs outbound URLs (health, webhook, recovery) must fall in; empty allows any "
            "address but link-local and cloud-metadata ones."),
    Setting("outbound_deny_cidrs", str, "", "Comma-separated CIDRs outbound URLs may never point at."),
    Setting("console_notifications", bool, True, "Print live tenants' notifications on standard output."),
    Setting("poll_concurrency", int, 200, "Most health polls in flight at once."),
    Setting("poll_timeout", float, 3.0, "Seconds a health poll may take before it counts as a timeout."),
    Setting("smart_interval", float, 15.0,
            "Seconds between rounds of smart rules on the appliance's own figures (system.*, deliveries.*, rates)."),
    Setting("stream_buffer", int, 256,
            "Messages a live alert stream client may fall behind before it is dropped as too slow."),
    Setting("ai_api_key", str, "", "Anthropic API key for the diagnosis council (secret; empty: heuristic diagnosis only)."),
    Setting("ai_base_url", str, "", "Anthropic API base URL (empty: the SDK's default)."),
    Setting("ai_models", str, "claude-haiku-4-5,claude-sonnet-4-5",
            "The council's two models, comma-separated: a fast one and a strong one."),
    Setting("ai_timeout", float, 20.0, "Seconds one model call may take."),
    Setting("ai_max_retries", int, 2, "Retries of one model call (429, 5xx, 529, connection errors)."),
)
_BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class Config:
    data_dir: Path = Path("alertengine-data")
    database_url: str = field(default="", repr=False)
    node_name: str = ""
    node_url: str = ""
    lease_ttl: float = 6.0
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_self_signed: bool = False
    trusted_proxies: str = ""
    log_level: str = "info"
    log_format: str = "text"
    checkpoint_interval: float = 1.0
    writer_batch_max: int = 1000
    checkpoint_sink: str = ""
    witnesses: str = ""
    witness_interval: float = 60.0
    outbound_allow_cidrs: str = ""
    outbound_deny_cidrs: str = ""
    console_notifications: bool = True
    poll_concurrency: int = 200
    poll_timeout: float = 3.0
    smart_interval: float = 15.0
    stream_buffer: int = 256
    ai_api_key: str = field(default="", repr=False)
    ai_base_url: str = ""
    ai_models: str = "claude-haiku-4-5,claude-sonnet-4-5"
    ai_timeout: float = 20.0
    ai_max_retries: int = 2
    source: str = "defaults"

    @property
    def url_policy(self) -> UrlPolicy:
        return UrlPolicy.from_strings(self.outbound_allow_cidrs, self.outbound_deny_cidrs)

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert_file or self.tls_self_signed)

    @property
    def base_url(self) -> str:
        return self.public_url.rstrip("/") or f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def node(self) -> str:
        """This node's name among the nodes sharing a PostgreSQL database."""
        return self.node_name or f"{socket.gethostname()}:{self.port}"

    @property
    def own_url(self) -> str:
        """Where the other nodes reach this one (they forward requests here while it leads)."""
        return self.node_url.rstrip("/") or f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def proxies(self) -> list[str]:
        return [p.strip() for p in self.trusted_proxies.split(",") if p.strip()]

    def with_overrides(self, **values: Any) -> "Config":
        clean = {k: _coerce(k, v, "command line") for k, v in values.items() if v is not None}
        return _validated(replace(self, **clean))


def _coerce(name: str, value: Any, origin: str) -> Any:
    setting = _BY_NAME.get(name)
    if setting is None:
        raise ConfigError(name, f"unknown setting (from {origin}); known settings: {', '.join(_BY_NAME)}")
    want = setting.type
    try:
        if want is Path:
            if not isinstance(value, (str, Path)) or not str(value):
                raise TypeError
            return Path(value)
        if want is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                return value.lower() in ("1", "true", "yes", "on")
            raise TypeError
        if want is int:
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                raise TypeError
            return int(value)
        if want is float:
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise TypeError
            return float(value)
        if not isinstance(value, str):
            raise TypeError
        return value
    except (TypeError, ValueError):
        raise ConfigError(name, f"expected {want.__name__}, got {value!r} (from {origin})") from None


def _validated(cfg: Config) -> Config:
    if cfg.database_url and not cfg.database_url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("database_url", "must be empty (SQLite in data_dir) or start with postgresql://")
    if not 1 <= cfg.lease_ttl <= 60:
        raise ConfigError("lease_ttl", f"must be between 1 and 60 seconds, got {cfg.lease_ttl}")
    if cfg.node_url and not cfg.node_url.startswith(("http://", "https://")):
        raise ConfigError("node_url", f"must start with http:// or https://, got {cfg.node_url!r}")
    if not 0 < cfg.port < 65536:
        raise ConfigError("port", f"must be 1-65535, got {cfg.port}")
    if cfg.log_level not in LOG_LEVELS:
        raise ConfigError("log_level", f"must be one of {', '.join(LOG_LEVELS)}, got {cfg.log_level!r}")
    if cfg.log_format not in LOG_FORMATS:
        raise ConfigError("log_format", f"must be one of {', '.join(LOG_FORMATS)}, got {cfg.log_format!r}")
    if not 0.05 <= cfg.checkpoint_interval <= 3600:
        raise ConfigError("checkpoint_interval", f"must be between 0.05 and 3600 seconds, got {cfg.checkpoint_interval}")
    if not 1 <= cfg.writer_batch_max <= 100_000:
        raise ConfigError("writer_batch_max", f"must be between 1 and 100000, got {cfg.writer_batch_max}")
    for name in ("outbound_allow_cidrs", "outbound_deny_cidrs"):
        try:
            UrlPolicy.from_strings(getattr(cfg, name), "")
        except ValueError as exc:
            raise ConfigError(name, str(exc)) from None
    if not 1 <= cfg.poll_concurrency <= 10_000:
        raise ConfigError("poll_concurrency", f"must be between 1 and 10000, got {cfg.poll_concurrency}")
    if not 0.1 <= cfg.poll_timeout <= 120:
        raise ConfigError("poll_timeout", f"must be between 0.1 and 120 seconds, got {cfg.poll_timeout}")
    if len([m for m in cfg.ai_models.split(",") if m.strip()]) != 2:
        raise ConfigError("ai_models", f"name exactly two models, comma-separated, got {cfg.ai_models!r}")
    if not 1 <= cfg.ai_timeout <= 300:
        raise ConfigError("ai_timeout", f"must be between 1 and 300 seconds, got {cfg.ai_timeout}")
    if not 0 <= cfg.ai_max_retries <= 10:
        raise ConfigError("ai_max_retries", f"must be between 0 and 10, got {cfg.ai_max_retries}")
    if cfg.ai_base_url and not cfg.ai_base_url.startswith(("http://", "https://")):
        raise ConfigError("ai_base_url", f"must start with http:// or https://, got {cfg.ai_base_url!r}")
    from .store.publish import check_sink, parse_witnesses
    check_sink(cfg.checkpoint_sink)
    parse_witnesses(cfg.witnesses)
    if not 1 <= cfg.smart_interval <= 3600:
        raise ConfigError("smart_interval", f"must be between 1 and 3600 seconds, got {cfg.smart_interval}")
    if not 1 <= cfg.stream_buffer <= 100_000:
        raise ConfigError("stream_buffer", f"must be between 1 and 100000, got {cfg.stream_buffer}")
    if not 1 <= cfg.witness_interval <= 86_400:
        raise ConfigError("witness_interval", f"must be between 1 and 86400 seconds, got {cfg.witness_interval}")
    if bool(cfg.tls_cert_file) != bool(cfg.tls_key_file):
        missing = "tls_key_file" if cfg.tls_cert_file else "tls_cert_file"
        raise ConfigError(missing, "tls_cert_file and tls_key_file go together: set both or neither")
    for proxy in cfg.proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError("trusted_proxies", f"{proxy!r} is not an IP address or CIDR") from None
    if cfg.public_url and not cfg.public_url.startswith(("http://", "https://")):
        raise ConfigError("public_url", f"must start with http:// or https://, got {cfg.public_url!r}")
    return cfg


def read_file(path: Path) -> dict[str, Any]:
    """Parse a config file; errors name the file and, where known, the key."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(None, f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(None, f"{path} is not valid TOML: {exc}") from None
    return data


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Defaults ← file (``path``, ``$ALERTENGINE_CONFIG`` or ./alertengine.toml) ← environment."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    source = "defaults"
    if path is None and environ.get(ENV_PREFIX + "CONFIG"):
        path = Path(environ[ENV_PREFIX + "CONFIG"])
    if path is None and Path("alertengine.toml").is_file():
        path = Path("alertengine.toml")
    if path is not None:
        for key, value in read_file(path).items():
            if isinstance(value, dict):
                raise ConfigError(key, f"unknown section [{key}] in {path}")
            values[key] = _coerce(key, value, str(path))
        source = str(path)
    for s in SETTINGS:
        env = environ.get(ENV_PREFIX + s.name.upper())
        if env is not None:
            values[s.name] = _coerce(s.name, env, ENV_PREFIX + s.name.upper())
    return _validated(replace(Config(), source=source, **values))


def describe() -> list[tuple[str, str, str]]:
    """(name, default, help) of every setting, for ``check-config --list`` and the README."""
    return [(s.name, str(s.default), s.help) for s in SETTINGS]


def council_settings(cfg: Config) -> Any:
    """The council's settings (a ``diagnosis.council.CouncilSettings``), or None without a key."""
    from .diagnosis.council import CouncilSettings
    if not cfg.ai_api_key:
        return None
    first, second = (m.strip() for m in cfg.ai_models.split(","))
    return CouncilSettings(cfg.ai_api_key, cfg.ai_base_url, (first, second), cfg.ai_timeout, cfg.ai_max_retries)


assert {f.name for f in fields(Config)} - {"source"} == set(_BY_NAME), "Config and SETTINGS disagree"
