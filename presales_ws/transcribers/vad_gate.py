"""An energy gate in front of Silero: windows that only confirm what the channel is already doing skip the model.

On Deepgram, Silero on every 32 ms window of every channel cost about what the whole relay does per frame.
Most windows say nothing new: a loud window in the middle of speech is speech, a window at the channel's
noise floor in the middle of a pause is a pause. The gate answers those two cases from the window's level
(one dot product) against an adaptive per-channel noise floor; every transition (speech starting, a pause
starting) is still Silero's call, with its recurrent state caught up on the windows it skipped
(vad_batch.py), so a pause is found where Silero alone finds it (tests/test_vad_gate.py). Speech is skipped
only from a window near its recent peak on (a level sinking toward a pause, still within 10 dB of a decaying
peak, is Silero's to judge), and where the caught-up windows show the pause began inside a skipped run, the
pause counts from there (vad.py): without either, a pause on real speech came up to 7 windows late or not at
all (one of the 25 in the real fixtures streamed end to end, as bench/relay.py does). Noise at a
steady level, however loud, becomes the floor rather than speech. A digitally silent window drops the floor
to it: steady noise after that goes to Silero (costlier, never wrong) until the floor has risen back.
What a skipped window saves: the catch-up hears the last CATCH_UP_WINDOWS of a skipped run anyway, so only the
windows before them (long words, long pauses) never reach the model: on the real fixtures end to end, the gate
asks about 41% of the windows and the model hears 78% (the catch-up with fewer windows loses the state's
agreement with Silero alone: pauses one window later on a third of them).
"""

from __future__ import annotations

import math

import numpy as np

from presales_ws.transcribers.vad import WINDOW_MS, Samples

SPEECH_MARGIN_DB = 15.0  # a window this far above the floor, while speech goes on, continues it ...
SPEECH_PEAK_MARGIN_DB = 10.0  # ... if also within this of the speech's recent peak (the end of a word is not)
SPEECH_ENTER_PEAK_MARGIN_DB = 6.0  # ... but a run of such windows starts only within this of the peak
SPEECH_SETTLED_WINDOWS = 3  # ... and Silero has heard speech for this many windows in a row
PEAK_DECAY_DB_PER_S = 10.0  # the recent peak forgets this fast
PAUSE_MARGIN_DB = 8.0  # a window within this of the floor continues a pause ...
PAUSE_SETTLED_WINDOWS = 6  # ... that Silero has heard for this many windows (past the 160 ms that make a pause)
FLOOR_RISE_DB_PER_S = 0.5  # the floor follows quieter windows at once and louder ones this slowly
WARMUP_MS = 1000.0  # Silero judges every window until the floor has seen this much audio
MIN_POWER = 1e-10  # -100 dBFS: digital silence has a level too

_RISE_DB_PER_WINDOW = FLOOR_RISE_DB_PER_S * WINDOW_MS / 1000
_PEAK_DECAY_DB_PER_WINDOW = PEAK_DECAY_DB_PER_S * WINDOW_MS / 1000
_WARMUP_WINDOWS = round(WARMUP_MS / WINDOW_MS)


class EnergyGate:
    """One channel's noise floor, and the verdict of one window when its level alone settles it."""

    __slots__ = ("_floor_db", "_peak_db", "_seen", "_skipping")

    def __init__(self) -> None:
        self._floor_db = 0.0
        self._peak_db = -100.0
        self._seen = 0
        self._skipping = False  # the last window was one the level said continues speech

    def verdict(self, window: Samples, *, speech_run: int, silent_run: int) -> float | None:
        """1.0 (speech) or 0.0 (no speech) when the level says the channel goes on as it is; None: ask Silero.

        `speech_run`, `silent_run`: windows of speech, or of no speech, up to this one. A loud window never
        starts speech (a door, a cough) and a quiet one never ends it (the soft end of a word), nor continues
        a pause Silero has not settled yet: only Silero changes the channel's state.
        """
        level_db = 10.0 * math.log10(max(float(np.dot(window, window)) / len(window), MIN_POWER))
        floor_db, peak_db = self._floor_db, self._peak_db
        self._seen += 1
        self._floor_db = level_db if self._seen == 1 or level_db < floor_db else floor_db + _RISE_DB_PER_WINDOW
        self._peak_db = max(level_db, peak_db - _PEAK_DECAY_DB_PER_WINDOW)
        if self._seen <= _WARMUP_WINDOWS:
            return None
        if speech_run >= SPEECH_SETTLED_WINDOWS:
            margin_db = SPEECH_PEAK_MARGIN_DB if self._skipping else SPEECH_ENTER_PEAK_MARGIN_DB
            self._skipping = level_db >= max(floor_db + SPEECH_MARGIN_DB, peak_db - margin_db)
            return 1.0 if self._skipping else None
        self._skipping = False
        if silent_run >= PAUSE_SETTLED_WINDOWS:
            return 0.0 if level_db <= floor_db + PAUSE_MARGIN_DB else None
        return None
