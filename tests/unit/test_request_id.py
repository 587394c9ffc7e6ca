import re
from itertools import pairwise

from pillion.http.request_id import request_id

UUID4 = re.compile(rb"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_ids_are_uuid4_shaped_and_distinct() -> None:
    ids = [request_id() for _ in range(10_000)]
    assert all(UUID4.match(i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_counter_wraps_within_twelve_hex_digits() -> None:
    first = request_id()
    assert len(first) == 36
    assert first[:24] == request_id()[:24]  # one process, one prefix


def test_the_counter_part_counts_up_by_one_across_the_table_boundaries() -> None:
    counters = [int(request_id()[-12:], 16) for _ in range(600)]  # at least two 256-id boundaries
    assert all(b == (a + 1) & 0xFFFFFFFFFFFF for a, b in pairwise(counters))
