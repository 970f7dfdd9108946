"""Stream processing: classify, normalise, redact and sample recorded exchanges."""

__all__: list[str] = []
