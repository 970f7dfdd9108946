"""`trafficreel stream --check` and the faust credentials mapping."""

from __future__ import annotations

from pathlib import Path

import faust
import pytest
from typer.testing import CliRunner

from trafficreel.cli import app
from trafficreel.streams.app import faust_credentials


def test_check_prints_outputs_and_rules(tmp_path: Path) -> None:
    """--check validates the rules file and prints where each class goes, without connecting."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules: [{name: internal, class: internal, path: /i/**}]\noutputs: {internal: audit.internal, probe: null}\n"
    )
    result = CliRunner().invoke(app, ["--topic-prefix", "shop", "stream", "--check", "--rules", str(rules)])
    assert result.exit_code == 0, result.output
    assert "audit.internal" in result.output and "shop.business" in result.output
    assert "(dropped)" in result.output
    assert result.output.index("internal->internal") < result.output.index("k8s-api-host->k8s-api")


def test_check_reports_a_class_without_output(tmp_path: Path) -> None:
    """A class with no output topic is a one-line error saying what to add."""
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules: [{name: internal, class: internal, path: /i/**}]\n")
    result = CliRunner().invoke(app, ["stream", "--check", "--rules", str(rules)])
    assert result.exit_code == 1
    assert "outputs:" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("rules_text", "said"),
    [
        ("outputs: {business: raw}\n", "own input topic"),
        ("outputs: {scrape: dlq}\n", "own dead-letter topic"),
        ("outputs: {probes: null}\n", "['probes']"),
        ("sampling: {class_rates: {prob: 0.1}}\n", "['prob']"),
    ],
)
def test_check_rejects_outputs_that_loop_or_name_no_class(tmp_path: Path, rules_text: str, said: str) -> None:
    """An output into the worker's own input or DLQ, or a misspelt class, is refused, not ignored."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules_text)
    result = CliRunner().invoke(app, ["stream", "--check", "--rules", str(rules)])
    assert result.exit_code == 1, result.output
    assert said in result.output and "Traceback" not in result.output


def test_faust_credentials_follow_the_librdkafka_properties() -> None:
    """SASL settings given for the other clients configure the worker's consumer too."""
    assert faust_credentials({}) is None
    sasl = faust_credentials(
        {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": "u",
            "sasl.password": "p",
        }
    )
    assert isinstance(sasl, faust.SASLCredentials)
    assert (sasl.username, sasl.password, sasl.mechanism.value) == ("u", "p", "SCRAM-SHA-512")
    with pytest.raises(ValueError, match="not supported"):
        faust_credentials({"security.protocol": "KERBEROS_MAGIC"})
