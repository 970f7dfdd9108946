"""The sink's duplicate lookup: which records of a batch ClickHouse already holds, by id.

A record sent twice upstream keeps its id and its start time, so it is looked for among the rows
of the batch's time range.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from ._batches import Item

__all__ = ["existing_ids"]

Rows = Callable[..., Sequence[Sequence[Any]]]  # the sink's retried query: (sql, **kwargs) -> rows

# Ids per duplicate lookup: 37 bytes each. The lookup raises max_query_size (256 KiB by default)
# to hold them: every lookup reads the id index of the batch's time range once.
_LOOKUP_IDS = 20_000
_LOOKUP_SETTINGS = {"max_query_size": 2 << 20}
# Rows of a batch's time range read back and compared in the sink: at most this many, or this
# factor times the records looked up if more (beyond, the ids are sent to ClickHouse instead).
_RANGE_LOOKUP_ROWS = 20_000
_RANGE_LOOKUP_FACTOR = 4
_ID_TEXT = re.compile(r"[0-9a-fA-F-]{1,64}")  # an id that may go into a statement as it is


def existing_ids(rows: Rows, items: list[Item]) -> set[str]:
    """The ids among ``items`` (lowercase, as ClickHouse prints a UUID) already in ``exchanges``."""
    found: set[str] = set()
    for first in range(0, len(items), _LOOKUP_IDS):
        found |= _existing_ids_of(rows, items[first : first + _LOOKUP_IDS])
    return found


def _existing_ids_of(rows: Rows, items: list[Item]) -> set[str]:
    low = int(min(item.start_time for item in items))
    high = int(max(item.start_time for item in items))
    within = (
        f"start_time BETWEEN fromUnixTimestamp64Micro({low}, 'UTC') "
        f"AND fromUnixTimestamp64Micro({high}, 'UTC')"
    )
    # Usually the batch's time range holds few rows besides its own: they are read whole (the
    # primary key and the day partitions find them) and compared here, in 5 ms where sending
    # 10,000 ids costs 40, 30 of them in parsing and splitting the list.
    bound = max(_RANGE_LOOKUP_ROWS, _RANGE_LOOKUP_FACTOR * len(items))
    found = rows(f"SELECT toString(id) FROM exchanges WHERE {within} LIMIT {bound + 1}")  # noqa: S608 - numbers only
    if len(found) <= bound:
        wanted = {item.id.lower() for item in items}
        return {row[0] for row in found if row[0] in wanted}
    # A wide range (late records among new ones) holding many rows: the ids go to ClickHouse,
    # as one string split on the server (a literal list of thousands of UUIDs costs more to
    # bind here and to parse there, and so does binding the string as a parameter). It goes
    # into the statement as it is, holding only hex digits, dashes and commas; the set still
    # drives the bloom-filter index on id. An id that is not a UUID was never stored
    # (ClickHouse refuses it): it is left out.
    ids = ",".join(item.id for item in items if _ID_TEXT.fullmatch(item.id))
    if not ids:
        return set()
    sql = (
        f"SELECT toString(id) FROM exchanges WHERE {within} "  # noqa: S608 - see above
        f"AND id IN (SELECT toUUIDOrZero(arrayJoin(splitByChar(',', '{ids}'))))"
    )
    return {row[0] for row in rows(sql, settings=_LOOKUP_SETTINGS)}
