"""One raw record in, one routed record (or a drop, or a dead letter) out — no Kafka here.

``Processor.process(value, ...)`` decodes, classifies, normalises the route, redacts, samples and
encodes. It is plain, synchronous and fast, so the faust agent, the plain benchmark loop and the
unit tests all run the same code.

Encoding takes a shortcut when it is safe: the stream fields (class, rule, route, weight,
redactions, tags) are the last ones of the record, so when the record was written with the current
schema and nothing before them changed, the output is the input's bytes up to those fields (the
decoder says where they start) plus their new encoding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from trafficreel.schemas import DecodeError, Deserializer, EncodeError, Exchange, Serializer
from trafficreel.schemas._encoder import compile_encoder

from ._classify import Classifier
from ._config import StreamRules
from ._redact import StreamRedactor
from ._routes import RouteNormaliser
from ._sample import CapStore, Sampler

__all__ = ["DeadLetter", "Processed", "Processor", "dead_letter_headers"]

KafkaHeaders = Sequence[tuple[str, bytes | None]]
_TAIL_FIELDS = ("traffic_class", "class_rule", "route", "sample_weight", "redactions", "tags")


@dataclass(slots=True)
class Processed:
    """A record that passed: where it goes, or why it was dropped (``topic is None``)."""

    topic: str | None
    value: bytes | None
    traffic_class: str
    reason: str  # kept: error | slow | sampled ; dropped: head | cap | class
    record_id: str
    service: str


@dataclass(slots=True)
class DeadLetter:
    """A record that could not be processed, with the reason for the dead-letter topic."""

    reason: str  # decode reasons (bad-magic, truncated, …), encode-error, process-error
    detail: str
    stage: str  # decode | process | encode


def dead_letter_headers(
    original: KafkaHeaders | None, letter: DeadLetter, topic: str, partition: int, offset: int
) -> list[tuple[str, bytes]]:
    """The original headers plus where the record came from and why it could not be processed."""
    headers = [(k, v if v is not None else b"") for k, v in (original or ())]
    headers += [
        ("trafficreel-dlq-reason", letter.reason.encode()),
        ("trafficreel-dlq-detail", letter.detail.encode("utf-8", "replace")[:2000]),
        ("trafficreel-dlq-stage", letter.stage.encode()),
        ("trafficreel-dlq-topic", topic.encode()),
        ("trafficreel-dlq-partition", str(partition).encode()),
        ("trafficreel-dlq-offset", str(offset).encode()),
    ]
    return headers


class Processor:
    """Decode → classify → route → redact → sample → encode, for one record at a time."""

    def __init__(
        self,
        rules: StreamRules,
        topics: Mapping[str, str | None],
        *,
        serializer: Serializer | None = None,
        deserializer: Deserializer | None = None,
        store: CapStore | None = None,
    ) -> None:
        self.classifier = Classifier(
            (r.rule() for r in rules.rules), builtin=rules.builtin_rules, disable=rules.disable_rules
        )
        self.routes = RouteNormaliser(rules.routes)
        self.redactor = StreamRedactor(
            json_keys=rules.redact.all_json_keys(),
            key_suffixes=rules.redact.all_key_suffixes(),
            patterns=rules.redact.all_patterns(),
            headers=rules.redact.headers,
            query=rules.redact.query,
            keep=rules.redact.keep,
        )
        self.sampler = Sampler(rules.sampling.policy(), store)
        missing = sorted(self.classifier.classes - set(topics))
        if missing:
            raise ValueError(
                f"no output topic for class(es) {missing}; map each class to a topic (or null to "
                "drop it) under 'outputs:' in the rules file"
            )
        # A misspelt class would otherwise be ignored without a word ("probes: null" drops nothing).
        known = sorted(self.classifier.classes)
        named_classes: dict[str, Mapping[str, object]] = {
            "outputs": rules.outputs,
            "sampling.class_rates": rules.sampling.class_rates,
        }
        for section, named in named_classes.items():
            unknown = sorted(set(named) - self.classifier.classes)
            if unknown:
                raise ValueError(
                    f"{section} in the rules file names class(es) {unknown} that no rule assigns; "
                    f"the classes are {known}"
                )
        self.topics = dict(topics)
        self.serializer = serializer or Serializer()
        self.deserializer = deserializer or Deserializer()
        schema = self.serializer.schema
        fields = schema.json["fields"]
        first = [f["name"] for f in fields].index(_TAIL_FIELDS[0])
        if tuple(f["name"] for f in fields[first:]) != _TAIL_FIELDS:
            raise ValueError("the stream fields must be the last fields of the exchange schema")
        self._tail = compile_encoder(
            {
                "type": "record",
                "name": "Tail",
                "namespace": schema.json.get("namespace"),
                "fields": fields[first:],
            }
        )
        self._schema = schema
        self._headers: dict[str, bytes] = {}

    def process(self, value: bytes | None, topic: str, partition: int = 0) -> Processed | DeadLetter:
        """The routed record for one raw message value, read from ``topic`` and ``partition``."""
        try:
            record, writer, start, tail_at = self.deserializer.decode_split(value or b"", _TAIL_FIELDS[0])
        except DecodeError as exc:
            return DeadLetter(exc.reason, str(exc), "decode")
        try:
            if writer.fingerprint != self._schema.fingerprint:
                tail_at = None
            return self._process(record, value or b"", start, tail_at, partition)
        except EncodeError as exc:
            return DeadLetter("encode-error", str(exc), "encode")
        except Exception as exc:  # noqa: BLE001 - one bad record must not stop the stream
            return DeadLetter("process-error", f"{type(exc).__name__}: {exc}", "process")

    def _process(
        self, record: Exchange, data: bytes, start: int, tail_at: int | None, partition: int
    ) -> Processed:
        traffic_class, rule = self.classifier.classify(record)
        service = record["source"]["service"]
        route = self.routes.route(service, record["request"]["path"])
        out_topic = self.topics[traffic_class]
        if out_topic is None:
            return Processed(None, None, traffic_class, "class", record["id"], service)
        decision = self.sampler.decide(record, traffic_class, route, str(partition))
        if not decision.keep:
            return Processed(None, None, traffic_class, decision.reason, record["id"], service)
        changed = self.redactor.redact(record)
        record["traffic_class"] = traffic_class
        record["class_rule"] = rule
        record["route"] = route
        record["sample_weight"] = decision.weight
        header = self._header(out_topic)
        if tail_at is not None and not changed:
            # Everything before the stream fields is unchanged: reuse its bytes.
            value = header + data[start:tail_at] + self._encode_tail(record)
        else:
            value = self.serializer(record, _Topic(out_topic))
        return Processed(out_topic, value, traffic_class, decision.reason, record["id"], service)

    def _encode_tail(self, record: Exchange) -> bytes:
        out = bytearray()
        self._tail(record, out)
        return bytes(out)

    def _header(self, topic: str) -> bytes:
        header = self._headers.get(topic)
        if header is None:
            header = self._headers[topic] = self.serializer.header_for(topic)
        return header


class _Topic:
    __slots__ = ("topic",)

    def __init__(self, topic: str) -> None:
        self.topic = topic
