"""In-app recording: the library a service imports to record its HTTP traffic to Kafka."""

__all__: list[str] = []
