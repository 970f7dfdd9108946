"""Stream processing: classify, normalise, redact and sample recorded exchanges.

The logic (``Processor`` and its parts) is plain Python with no Kafka in it; ``trafficreel.streams.app``
runs it as a faust-streaming worker (``trafficreel stream``).
"""

from ._classify import BUILTIN_RULES, Classifier, Rule
from ._config import StreamRules, load_rules
from ._process import DeadLetter, Processed, Processor, dead_letter_headers
from ._redact import DEFAULT_JSON_KEYS, DEFAULT_PATTERNS, StreamRedactor
from ._routes import RouteNormaliser, normalise_path
from ._sample import CapStore, Decision, Sampler, SamplingPolicy, head_hash

__all__ = [
    "BUILTIN_RULES",
    "DEFAULT_JSON_KEYS",
    "DEFAULT_PATTERNS",
    "CapStore",
    "Classifier",
    "DeadLetter",
    "Decision",
    "Processed",
    "Processor",
    "RouteNormaliser",
    "Rule",
    "Sampler",
    "SamplingPolicy",
    "StreamRedactor",
    "StreamRules",
    "dead_letter_headers",
    "head_hash",
    "load_rules",
    "normalise_path",
]
