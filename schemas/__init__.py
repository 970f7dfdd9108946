"""The trafficreel record: Avro schema, typed views, ids and the wire codec.

>>> from trafficreel.schemas import Serializer, Deserializer, sample_exchange
>>> record = sample_exchange()
>>> Deserializer()(Serializer()(record)) == record
True
"""

from ._codec import (
    CONFLUENT_MAGIC,
    SINGLE_OBJECT_MAGIC,
    Deserializer,
    Serializer,
    TopicContext,
    topic_subject,
)
from ._ids import id_time_ms, new_id
from ._records import (
    Body,
    BodyState,
    Direction,
    Exchange,
    Header,
    Outcome,
    OutcomeKind,
    Peer,
    Redaction,
    Request,
    Response,
    Source,
    Trace,
    blank_body,
)
from ._registry import ConfluentRegistry, SchemaRegistry
from ._schema import (
    CURRENT_VERSION,
    SCHEMA_DIR,
    WriterSchema,
    exchange_schema,
    exchange_schema_path,
    known_versions,
)
from .errors import DecodeError, DecodeReason, EncodeError, RegistryError, SchemaError
from .testing import sample_exchange

__all__ = [
    "CONFLUENT_MAGIC",
    "CURRENT_VERSION",
    "SCHEMA_DIR",
    "SINGLE_OBJECT_MAGIC",
    "Body",
    "BodyState",
    "ConfluentRegistry",
    "DecodeError",
    "DecodeReason",
    "Deserializer",
    "Direction",
    "EncodeError",
    "Exchange",
    "Header",
    "Outcome",
    "OutcomeKind",
    "Peer",
    "Redaction",
    "RegistryError",
    "Request",
    "Response",
    "SchemaError",
    "SchemaRegistry",
    "Serializer",
    "Source",
    "TopicContext",
    "Trace",
    "WriterSchema",
    "blank_body",
    "exchange_schema",
    "exchange_schema_path",
    "id_time_ms",
    "known_versions",
    "new_id",
    "sample_exchange",
    "topic_subject",
]
