"""End of turn on Deepgram: the service's VAD asks for the final (Finalize) instead of waiting for Deepgram's
endpointing, and holds a final whose words go on, so a pause inside a sentence does not cut it.

Real SDK, Deepgram-compatible server on 127.0.0.1 that models endpointing (a final only after the requested
silence) and answers Finalize at once with `from_finalize`. Audio is sent at real time, as a client does; every
assertion is on what reached the client and on the order of events upstream, never on wall-clock time.
"""

from __future__ import annotations

import anyio
import numpy as np
import pytest

from presales_ws.client import connect
from presales_ws.client.wavfile import read_wav
from presales_ws.protocol import ServerMessage, Transcript
from tests.deepgram_server import Script
from tests.support import FIXTURES, MANIFEST, finals
from tests.test_deepgram import Start
from tests.test_deepgram import start as start  # the fixture: a fake Deepgram and a server pointed at it

pytestmark = pytest.mark.anyio

FRAME_BYTES = 640
PAUSE_S = 0.7


def zeros(seconds: float) -> bytes:
    return bytes(int(seconds * 16000) * 2)


def paused(file: str, at_fraction: float = 0.45) -> bytes:
    """The fixture's sentence with PAUSE_S of silence inserted at the quietest 20 ms near `at_fraction` of it."""
    pcm = np.frombuffer(read_wav(FIXTURES / file).pcm, dtype="<i2")
    nonzero = np.flatnonzero(pcm)
    first, last = int(nonzero[0]), int(nonzero[-1])
    frames = np.arange(first, last - 320, 320)
    near = frames[np.abs(frames - (first + (last - first) * at_fraction)) < (last - first) * 0.1]
    energy = [float(np.abs(pcm[f : f + 320].astype(np.int32)).sum()) for f in near]
    cut = int(near[int(np.argmin(energy))])
    return pcm[:cut].tobytes() + zeros(PAUSE_S) + pcm[cut:].tobytes()


async def stream_realtime(url: str, pcm: bytes, *, until_finals: int) -> list[ServerMessage]:
    """Send at real time, then wait (silence keeps flowing) for `until_finals` finals before `stop`."""
    messages: list[ServerMessage] = []
    got_them = anyio.Event()
    with anyio.fail_after(60):
        async with connect(url) as session:

            async def send() -> None:
                started = anyio.current_time()
                padded = pcm + zeros(10.0)  # the silence after speech a live microphone keeps sending
                for index, offset in enumerate(range(0, len(padded), FRAME_BYTES)):
                    if got_them.is_set():
                        break
                    await anyio.sleep(max(0.0, started + index * 0.02 - anyio.current_time()))
                    await session.send_pcm(padded[offset : offset + FRAME_BYTES])
                await session.stop()

            async with anyio.create_task_group() as tg:
                tg.start_soon(send)
                async for message in session:
                    messages.append(message)
                    if len(finals(messages)) >= until_finals:
                        got_them.set()
    return messages


async def test_a_finished_sentence_is_finalized_by_the_service_not_by_deepgram_endpointing(start: Start) -> None:
    file = "pricing_question_gb.wav"
    fake, server = start(Script.from_manifest(file), deepgram_endpointing_ms=1000)
    messages = await stream_realtime(server.ws_url, read_wav(FIXTURES / file).pcm, until_finals=1)
    [final] = finals(messages)
    assert final.text == MANIFEST[file]["utterances"][0]["text"] and final.utterance_end
    upstream = [f for f in fake.connections[0].finals if f[0]]
    # The words came back as the answer to the service's Finalize, 160 ms into the pause: Deepgram's own
    # endpointing (1,000 ms of silence) never had to fire for them.
    assert upstream[-1] == (final.text, True, False)
    assert "Finalize" in fake.connections[0].control


async def test_a_sentence_with_a_pause_inside_stays_one_final(start: Start) -> None:
    pcm = paused("integrations_answer_us.wav")
    first, rest = "Yes, we integrate with", "Salesforce and HubSpot out of the box."
    fake, server = start(Script.from_regions(pcm, [first, rest]), deepgram_endpointing_ms=1000)
    messages = await stream_realtime(server.ws_url, pcm, until_finals=1)
    got = finals(messages)
    assert [m.text for m in got] == [f"{first} {rest}"]
    # Upstream it was two finals: the service's Finalize cut it at the pause, and the joiner put it back.
    upstream = [text for text, from_finalize, _ in fake.connections[0].finals if text and from_finalize]
    assert len(upstream) >= 2 and " ".join(upstream) == got[0].text
    # The client saw the first half as an interim, never as a final of its own.
    interims = [m.text for m in messages if isinstance(m, Transcript) and not m.is_final]
    assert any(text.startswith(first) for text in interims)


async def test_with_turn_detection_off_the_same_pause_is_left_to_deepgram(start: Start) -> None:
    pcm = paused("integrations_answer_us.wav")
    first, rest = "Yes, we integrate with", "Salesforce and HubSpot out of the box."
    fake, server = start(Script.from_regions(pcm, [first, rest]), deepgram_endpointing_ms=300, turn_detection="off")
    messages = await stream_realtime(server.ws_url, pcm, until_finals=2)
    assert [m.text for m in finals(messages)] == [first, rest]  # Deepgram's 300 ms endpointing cuts it
    assert fake.connections[0].control == ["Finalize", "CloseStream"]  # only `stop`'s
