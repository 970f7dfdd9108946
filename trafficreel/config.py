"""Settings of the trafficreel command line and services, declared once each.

Every setting has a type, a default, a description and an environment variable
(``TRAFFICREEL_`` + the name in capitals); command-line flags override the environment, and a
running ``trafficreel up`` publishes its endpoints in ``<data dir>/stack.env``, which is read last.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .errors import ConfigError

__all__ = [
    "ENV_PREFIX",
    "Settings",
    "default_data_dir",
    "is_secret",
    "load_settings",
    "mask_dsn",
    "stack_env_path",
]

ENV_PREFIX = "TRAFFICREEL_"
_SECRET_MARKERS = ("password", "secret", "token", "key", "credentials", "user.info")


def default_data_dir() -> Path:
    """``$TRAFFICREEL_DATA_DIR``, else ``$XDG_DATA_HOME/trafficreel``, else ``~/.local/share/trafficreel``."""
    explicit = os.environ.get(f"{ENV_PREFIX}DATA_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "trafficreel"


def stack_env_path(data_dir: Path | None = None) -> Path:
    """Where a running ``trafficreel up`` writes the settings other processes need."""
    return (data_dir or default_data_dir()) / "stack.env"


def is_secret(key: str) -> bool:
    """Whether a client property holds a credential that must never be printed."""
    lowered = key.lower()
    return any(marker in lowered for marker in _SECRET_MARKERS)


class Settings(BaseSettings):
    """All settings; see the README's configuration table for examples."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    kafka_bootstrap: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers, comma-separated host:port."
    )
    kafka_config: dict[str, str] = Field(
        default_factory=dict,
        description="Extra librdkafka client properties as JSON, e.g. "
        '{"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", ...}.',
    )
    kafka_config_file: Path | None = Field(
        None, description="A Java-style .properties file of client properties (as Kafka services hand out)."
    )
    topic_prefix: str = Field("trafficreel", description="Prefix of the project's topics: <prefix>.raw, ...")
    partitions: int = Field(
        3, ge=1, description="Partitions of each topic created by `up` or `topics create`."
    )
    replication_factor: int = Field(1, ge=1, description="Replication factor of created topics.")
    schema_registry_url: str | None = Field(
        None, description="Confluent Schema Registry URL; unset means Avro single-object framing."
    )
    schema_registry_config: dict[str, str] = Field(
        default_factory=dict,
        description='Extra registry client settings as JSON, e.g. {"basic.auth.user.info": "u:p"}.',
    )
    schema_path: list[Path] = Field(
        default_factory=list,
        description="Extra directories of .avsc writer schemas the decoder accepts (JSON list).",
    )
    clickhouse_url: str = Field(
        "http://127.0.0.1:8123",
        description="ClickHouse DSN: http(s)://user:password@host:port/database, "
        "or chdb:///path for in-process.",
    )
    clickhouse_ttl_days: int | None = Field(
        None, ge=1, description="Days the sink keeps rows in ClickHouse (a table TTL); unset keeps them."
    )
    sink_batch_rows: int = Field(
        10_000,
        ge=1,
        description="Records that make a sink batch due (all partitions together); while the insert before "
        "is still running a batch grows up to four times this.",
    )
    sink_batch_bytes: int = Field(
        32 << 20,
        ge=1024,
        description="Bytes of records that make a sink batch due; while the insert before is still running "
        "a batch grows up to four times this.",
    )
    sink_batch_seconds: float = Field(
        0.5,
        gt=0,
        le=300,
        description="Seconds the sink waits at most before inserting what it holds (the latency it adds).",
    )
    data_dir: Path = Field(
        default_factory=default_data_dir, description="Data of the embedded stack (ClickHouse tables, logs)."
    )
    stream_rules: Path | None = Field(
        None,
        description="YAML rules file of the stream worker (classes, routes, redaction, sampling, outputs).",
    )
    stream_group: str = Field(
        "trafficreel-stream", description="Consumer group (faust app id) of the stream workers."
    )
    health_port: int = Field(
        9464, ge=0, le=65535, description="Port of a worker's /metrics, /live and /ready endpoint (0: off)."
    )
    replay_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Replay targets allowed (comma-separated hosts, host:port, origins or globs); "
        "replay refuses any other target.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    log_format: Literal["console", "json"] = Field(
        "console", description="Log lines for people or for machines."
    )

    @field_validator("replay_allow", mode="before")
    @classmethod
    def _split_allow(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("kafka_config", "schema_registry_config")
    @classmethod
    def _no_bootstrap_in_config(cls, value: dict[str, str]) -> dict[str, str]:
        if "bootstrap.servers" in value:
            raise ValueError(
                "set the bootstrap servers with TRAFFICREEL_KAFKA_BOOTSTRAP, not bootstrap.servers"
            )
        return value

    def kafka_client_config(self, **overrides: Any) -> dict[str, Any]:
        """librdkafka properties for a client of this cluster (file, then JSON, then overrides)."""
        conf: dict[str, Any] = {"bootstrap.servers": self.kafka_bootstrap}
        if self.kafka_config_file is not None:
            conf.update(_read_properties(self.kafka_config_file))
        conf.update(self.kafka_config)
        conf.update(overrides)
        return conf

    def topic(self, name: str) -> str:
        """Full topic name from a short one (``raw`` → ``trafficreel.raw``); other names pass through."""
        from .topics import TOPIC_NAMES

        return f"{self.topic_prefix}.{name}" if name in TOPIC_NAMES else name

    def __repr_args__(self) -> Any:
        for key, value in super().__repr_args__():
            if isinstance(value, dict):
                value = {k: ("***" if is_secret(k) else v) for k, v in value.items()}
            elif key in ("clickhouse_url", "schema_registry_url") and isinstance(value, str) and "@" in value:
                value = mask_dsn(value)
            yield key, value


def mask_dsn(dsn: str) -> str:
    """The DSN with its password replaced by ***, for messages and logs."""
    scheme, _, rest = dsn.partition("://")
    creds, at, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***{at}{host}" if at else dsn


def _read_properties(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the Kafka properties file {path}: {exc.strerror}") from exc
    props: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "!")):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            key, _, value = line.partition(":")
        props[key.strip()] = value.strip()
    return props


# Variables of the test suite and other tools that share the prefix.
_OTHER_NAMES = frozenset({f"{ENV_PREFIX}TEST_BACKEND", f"{ENV_PREFIX}TEST_PREWARM"})


def _check_env_names(environ: dict[str, str]) -> None:
    # Other parts of trafficreel (the in-app recorder) read TRAFFICREEL_* variables of their own, so
    # only names that look like a misspelt setting of this object are refused.
    from trafficreel.producers import RecorderConfig

    recorder = [env for env, _, _ in RecorderConfig.describe()]
    known = [f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields] + recorder
    for name in environ:
        if name.startswith(ENV_PREFIX) and name not in known and name not in _OTHER_NAMES:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.88)
            if close:
                raise ConfigError(f"unknown setting {name}; did you mean {close[0]}?")


def load_settings(**flags: Any) -> Settings:
    """Build the settings from flags (None means not given), the environment and ``stack.env``.

    Raises ``ConfigError`` with one line per invalid setting.
    """
    _check_env_names(dict(os.environ))
    given = {k: v for k, v in flags.items() if v is not None}
    data_dir = given.get("data_dir") or default_data_dir()
    env_file = stack_env_path(Path(data_dir))
    try:
        return Settings(_env_file=env_file if env_file.is_file() else None, **given)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "settings"
            lines.append(f"{ENV_PREFIX}{field.upper()}: {err['msg']}")
        raise ConfigError("invalid settings:\n  " + "\n  ".join(lines)) from exc
