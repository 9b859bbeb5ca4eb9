"""A slow reader loses interims first, never finals; when even finals back up the session must close."""

from __future__ import annotations

import pytest

from presales_ws.outbox import Close, Outbox, OutboxOverflow

pytestmark = pytest.mark.anyio


async def test_interims_give_way_to_finals_when_full() -> None:
    box = Outbox(max_messages=3)
    box.put(b"interim-1", droppable=True)
    box.put(b"final-1")
    box.put(b"interim-2", droppable=True)
    box.put(b"final-2")  # full: the oldest interim goes
    box.put(b"interim-3", droppable=True)  # full: the other interim goes
    assert [await box.get() for _ in range(3)] == [b"final-1", b"final-2", b"interim-3"]
    assert box.dropped == 2


async def test_finals_backed_up_past_the_bound_overflow() -> None:
    box = Outbox(max_messages=2)
    box.put(b"final-1")
    box.put(b"final-2")
    box.put(b"interim", droppable=True)  # dropped, not queued
    with pytest.raises(OutboxOverflow):
        box.put(b"final-3")


async def test_close_comes_after_everything_queued_and_later_messages_are_discarded() -> None:
    box = Outbox(max_messages=8)
    box.put(b"final")
    box.close(1000, "stopped")
    box.put(b"late")
    box.close(1011)
    assert await box.get() == b"final"
    assert await box.get() == Close(1000, "stopped")
    assert len(box) == 0
