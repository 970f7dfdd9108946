"""Which ClickHouse errors are about the rows themselves (the sink's records go to the DLQ) and
which are transient (the insert is retried with back-off, nothing committed meanwhile)."""

from __future__ import annotations

import re

__all__ = ["refused_for_its_data", "transient"]

# ClickHouse errors about the rows themselves: only these send records to the DLQ. Anything else
# (unreachable, read-only, disk full, memory, a proxy's 502, a missing table …) is retried with
# back-off, uncommitted, however long it takes: an incident must not empty the stream into the DLQ.
_DATA_ERRORS = re.compile(
    r"\((CANNOT_PARSE_[A-Z_]+|CANNOT_CONVERT_TYPE|TYPE_MISMATCH|INCORRECT_DATA|CANNOT_READ_ALL_DATA"
    r"|ATTEMPT_TO_READ_AFTER_EOF|VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE|UNKNOWN_ELEMENT_OF_ENUM"
    r"|CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN|TOO_LARGE_STRING_SIZE|TOO_LARGE_ARRAY_SIZE"
    r"|ARGUMENT_OUT_OF_BOUND|DECIMAL_OVERFLOW|SIZES_OF_ARRAYS_DONT_MATCH|AVRO_EXCEPTION)\)"
)


def refused_for_its_data(exc: BaseException) -> bool:
    """ClickHouse refused the insert for its data (a parse, type or range error)."""
    from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

    if isinstance(exc, OperationalError) or not isinstance(exc, DatabaseError):
        return False
    return _DATA_ERRORS.search(str(exc)) is not None


def transient(exc: BaseException) -> bool:
    """Any other failure: retried, however long it takes."""
    return isinstance(exc, Exception) and not refused_for_its_data(exc)
