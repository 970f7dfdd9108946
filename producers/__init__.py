"""In-app recording: middleware and hooks that record a service's HTTP traffic to Kafka.

    from trafficreel.producers import TrafficRecorder        # ASGI: Starlette, FastAPI, Django asgi.py
    app = TrafficRecorder(app)

    from trafficreel.producers import TrafficRecorderWSGI    # WSGI: Flask, Django wsgi.py
    app.wsgi_app = TrafficRecorderWSGI(app.wsgi_app)

Settings come from ``TRAFFICREEL_*`` environment variables (see ``RecorderConfig``). Recording never
blocks or breaks the app: under pressure it drops records and counts them (``Recorder.stats()``).
"""

from ._asgi import TrafficRecorder
from ._body import BodyCapture, BodyPolicy
from ._config import DEFAULT_BODY_TYPES, RecorderConfig
from ._context import not_recorded
from ._exchange import PendingExchange
from ._outbound import instrument, uninstrument
from ._recorder import Recorder, RecorderStats
from ._redact import MARKER, Redactor
from ._wsgi import TrafficRecorderWSGI

__all__ = [
    "DEFAULT_BODY_TYPES",
    "MARKER",
    "BodyCapture",
    "BodyPolicy",
    "PendingExchange",
    "Recorder",
    "RecorderConfig",
    "RecorderStats",
    "Redactor",
    "TrafficRecorder",
    "TrafficRecorderWSGI",
    "instrument",
    "not_recorded",
    "uninstrument",
]
