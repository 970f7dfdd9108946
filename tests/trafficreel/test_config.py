"""Settings: environment, flags, files and a running stack, with typos refused and secrets hidden."""

from __future__ import annotations

from pathlib import Path

import pytest

from trafficreel.config import load_settings
from trafficreel.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("TRAFFICREEL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TRAFFICREEL_DATA_DIR", str(tmp_path))


def test_defaults_point_at_loopback(tmp_path: Path) -> None:
    """With nothing set, Kafka and ClickHouse are expected on loopback at their usual ports."""
    settings = load_settings()
    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.clickhouse_url == "http://127.0.0.1:8123"
    assert settings.data_dir == tmp_path
    assert settings.topic("raw") == "trafficreel.raw"
    assert settings.topic("k8s-api") == "trafficreel.k8s-api"
    assert settings.topic("other.topic") == "other.topic"
    assert settings.topic("trafficreel.dlq") == "trafficreel.dlq"


def test_environment_then_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    """Environment variables set values; flags override them; None flags change nothing."""
    monkeypatch.setenv("TRAFFICREEL_KAFKA_BOOTSTRAP", "kafka:9093")
    monkeypatch.setenv("TRAFFICREEL_PARTITIONS", "12")
    assert load_settings().kafka_bootstrap == "kafka:9093"
    assert load_settings(kafka_bootstrap=None).partitions == 12
    assert load_settings(kafka_bootstrap="other:1").kafka_bootstrap == "other:1"


def test_kafka_pass_through_from_file_json_and_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Client properties merge: properties file, then JSON from the environment, then flags."""
    props = tmp_path / "client.properties"
    props.write_text(
        "# from the provider\nsecurity.protocol=SASL_SSL\nsasl.mechanism=PLAIN\nsasl.username: u\n"
    )
    monkeypatch.setenv("TRAFFICREEL_KAFKA_CONFIG_FILE", str(props))
    monkeypatch.setenv(
        "TRAFFICREEL_KAFKA_CONFIG", '{"sasl.mechanism": "SCRAM-SHA-512", "sasl.password": "pw"}'
    )
    conf = load_settings().kafka_client_config(**{"client.id": "x"})
    assert conf == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "u",
        "sasl.password": "pw",
        "client.id": "x",
    }


def test_secrets_never_appear_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    """Passwords in client properties and DSNs are masked when settings are printed."""
    monkeypatch.setenv("TRAFFICREEL_KAFKA_CONFIG", '{"sasl.password": "hunter2", "ssl.key.password": "k3y"}')
    monkeypatch.setenv("TRAFFICREEL_CLICKHOUSE_URL", "https://analyst:s3cret@ch.example:8443/db")
    monkeypatch.setenv("TRAFFICREEL_SCHEMA_REGISTRY_URL", "https://key:regs3cret@registry.example")
    monkeypatch.setenv("TRAFFICREEL_SCHEMA_REGISTRY_CONFIG", '{"basic.auth.user.info": "key:info5ecret"}')
    text = repr(load_settings())
    for secret in ("hunter2", "k3y", "s3cret", "regs3cret", "info5ecret"):
        assert secret not in text
    assert "analyst:***@ch.example" in text and "key:***@registry.example" in text


def test_misspelt_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A TRAFFICREEL_ variable that is a near miss of a setting is an error naming the right one."""
    monkeypatch.setenv("TRAFFICREEL_KAFKA_BOOTSTRAPS", "x:1")
    with pytest.raises(ConfigError, match="did you mean TRAFFICREEL_KAFKA_BOOTSTRAP"):
        load_settings()


def test_invalid_values_are_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    """Invalid values name the variable; bootstrap.servers in the pass-through is refused."""
    monkeypatch.setenv("TRAFFICREEL_PARTITIONS", "zero")
    with pytest.raises(ConfigError, match="TRAFFICREEL_PARTITIONS"):
        load_settings()
    monkeypatch.setenv("TRAFFICREEL_PARTITIONS", "1")
    monkeypatch.setenv("TRAFFICREEL_KAFKA_CONFIG", '{"bootstrap.servers": "a:1"}')
    with pytest.raises(ConfigError, match="TRAFFICREEL_KAFKA_BOOTSTRAP"):
        load_settings()


def test_unknown_keyword_is_refused() -> None:
    """Programmatic settings reject unknown keys instead of ignoring them."""
    with pytest.raises(ConfigError, match="NOT_A_SETTING"):
        load_settings(not_a_setting=1)


def test_running_stack_is_found_but_environment_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A running stack's stack.env supplies endpoints; the environment still overrides them."""
    (tmp_path / "stack.env").write_text(
        "TRAFFICREEL_KAFKA_BOOTSTRAP=127.0.0.1:40001\nTRAFFICREEL_CLICKHOUSE_URL=http://127.0.0.1:40002\n"
    )
    settings = load_settings()
    assert (settings.kafka_bootstrap, settings.clickhouse_url) == (
        "127.0.0.1:40001",
        "http://127.0.0.1:40002",
    )
    monkeypatch.setenv("TRAFFICREEL_KAFKA_BOOTSTRAP", "kafka:9092")
    assert load_settings().kafka_bootstrap == "kafka:9092"


def test_readme_documents_every_setting() -> None:
    """The README's configuration table has a row for every setting's environment variable."""
    from trafficreel.config import Settings

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [name for name in Settings.model_fields if f"| `TRAFFICREEL_{name.upper()}` |" not in readme]
    assert missing == []


def test_readme_documents_every_recorder_setting() -> None:
    """Every in-app recorder setting's environment variable is named in the README."""
    from trafficreel.producers import RecorderConfig

    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    missing = [env for env, _, _ in RecorderConfig.describe() if f"`{env}`" not in readme]
    assert missing == []
    # The settings table of docs/integrations.md says it follows describe(): a row for each.
    table = (root / "docs" / "integrations.md").read_text()
    assert [env for env, _, _ in RecorderConfig.describe() if f"| `{env}` |" not in table] == []


def test_recorder_settings_are_not_mistaken_for_typos(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command line accepts the recorder's own variables in the same environment."""
    from trafficreel.producers import RecorderConfig

    for env, _, _ in RecorderConfig.describe():
        monkeypatch.setenv(env, "1" if "LIMIT" in env or "BYTES" in env or "TIMEOUT" in env else "x")
    monkeypatch.setenv("TRAFFICREEL_TAGS", "{}")
    monkeypatch.setenv("TRAFFICREEL_KAFKA_CONFIG", "{}")
    monkeypatch.setenv("TRAFFICREEL_ENABLED", "true")
    monkeypatch.setenv("TRAFFICREEL_REDACT", "true")
    load_settings()
