"""Replay: read recorded exchanges from Kafka or ClickHouse and send them to a target."""

__all__: list[str] = []
