"""The replay buffer: what a new provider connection must hear again, bounded, in whole frames."""

from __future__ import annotations

from presales_ws.transcribers.replay import ReplayBuffer


def test_holds_everything_since_the_commit_point() -> None:
    buffer = ReplayBuffer(max_bytes=1000, frame_bytes=4)
    buffer.append(bytes(range(40)))
    buffer.commit(10)  # rounded down to a whole frame: 8
    assert (buffer.start, buffer.end) == (8, 40)
    assert buffer.read(8, 4) == bytes([8, 9, 10, 11])
    assert buffer.read(0, 4) == bytes([8, 9, 10, 11])  # never before the start
    assert buffer.read(36, 100) == bytes([36, 37, 38, 39])
    assert buffer.read(40, 100) == b""


def test_commit_never_moves_backwards_or_past_the_end() -> None:
    buffer = ReplayBuffer(max_bytes=1000, frame_bytes=2)
    buffer.append(b"\x00" * 20)
    buffer.commit(12)
    buffer.commit(4)
    assert buffer.start == 12
    buffer.commit(500)
    assert (buffer.start, buffer.end, len(buffer)) == (20, 20, 0)
    buffer.append(b"\x01\x02")
    assert buffer.read(20, 10) == b"\x01\x02"


def test_the_bound_pushes_out_the_oldest_whole_frames_and_counts_them() -> None:
    buffer = ReplayBuffer(max_bytes=10, frame_bytes=4)  # bound rounds down to 8
    assert buffer.append(b"\x00" * 8) == 0
    assert buffer.append(b"\x01" * 2) == 4  # 2 over, rounded up to one frame
    assert (buffer.start, buffer.end) == (4, 10)
    assert buffer.dropped_bytes == 4
