"""deploy/: the Strimzi topic resources name exactly the project's topics."""

from __future__ import annotations

from pathlib import Path

import yaml

from trafficreel.topics import project_topics

ROOT = Path(__file__).resolve().parent.parent


def test_strimzi_topics_match_the_project_topics() -> None:
    """deploy/kafka/topics.yaml declares one KafkaTopic per project topic, with replicated settings."""
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy" / "kafka" / "topics.yaml").read_text()) if d]
    assert {d["kind"] for d in docs} == {"KafkaTopic"}
    assert [d["spec"]["topicName"] for d in docs] == project_topics()
    assert all(d["spec"]["replicas"] >= 3 and d["spec"]["config"]["min.insync.replicas"] == "2" for d in docs)
