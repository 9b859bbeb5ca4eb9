"""The built-in suggester: question/answer pairs from a Markdown or YAML file, ranked with BM25.

Each phrasing of a known question is its own BM25 document. Raw BM25 scores have no scale, so the confidence
combines two shares, each 0-1: how much of the phrasing the question covers (its BM25 score over the
phrasing's score against itself) and how much of the question the phrasing covers (the question's terms
weighted by idf, a term the knowledge base never uses counting as the rarest). Their geometric mean is high
only when both say "same question": "What are the rate limits of your API?" is not "Is there an API?".
Then each number, version or name of the question that an entry never mentions multiplies its confidence by
MISSING_SPECIFIC_FACTOR (`specifics.py`): "Are you SOC 1 certified?" is not the SOC 2 entry's question.
Below the threshold nothing is suggested: no suggestion is better than a wrong one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import bm25s
import msgspec
import numpy as np
import Stemmer
import yaml

from presales_ws.questions import AUXILIARIES, FILLERS, INTERROGATIVES, SUBJECTS
from presales_ws.suggesters.base import Answer, ContextLine, PartialSink, SuggesterUnavailable
from presales_ws.suggesters.specifics import missing, specifics, vocabulary

# Even a perfect match (1.0) that misses one of the question's specifics falls under the default threshold (0.5).
MISSING_SPECIFIC_FACTOR = 0.4

# Words every question has: they would only make unrelated questions look alike.
QUESTION_WORDS = sorted(
    INTERROGATIVES
    | AUXILIARIES
    | SUBJECTS
    | FILLERS
    | {
        "me",
        "us",
        "you're",
        "we're",
        "get",
        "tell",
        "know",
        "like",
        "please",
        "kind",
        "sort",
        "lot",
        "wondering",
        "whether",
        "curious",
        "love",
        "want",
        "wanted",
        "ask",
        "question",
        "quick",
        "guys",
    }
)
TOKEN_PATTERN = r"(?u)\b\w+\b"  # bm25s drops one-character tokens by default: "SOC 2" would equal "SOC 1"
STOPWORDS = sorted(set(bm25s.stopwords.STOPWORDS_EN) | set(QUESTION_WORDS))


class Entry(msgspec.Struct, frozen=True):
    """A known question, other ways customers ask it, and the answer the consultant can give."""

    question: str
    answer: str
    also: list[str] = msgspec.field(default_factory=list)

    @property
    def phrasings(self) -> list[str]:
        return [self.question, *self.also]


def load_entries(path: Path) -> list[Entry]:
    """Read a knowledge base file: `.md` (a `## question` heading per entry) or `.yaml`/`.yml` (a list)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SuggesterUnavailable(f"KNOWLEDGE_BASE: cannot read {path}: {exc.strerror}") from None
    try:
        entries = _parse_yaml(text) if path.suffix.lower() in {".yaml", ".yml"} else _parse_markdown(text)
    except (yaml.YAMLError, msgspec.ValidationError, ValueError) as exc:
        raise SuggesterUnavailable(f"KNOWLEDGE_BASE: {path}: {exc}") from None
    if not entries:
        raise SuggesterUnavailable(f"KNOWLEDGE_BASE: {path} holds no entries")
    return entries


def _parse_yaml(text: str) -> list[Entry]:
    return msgspec.convert(yaml.safe_load(text) or [], list[Entry])


_ALSO = re.compile(r"^also:\s*(.+)$", re.IGNORECASE)


def _parse_markdown(text: str) -> list[Entry]:
    """`## Question?`, then optional `Also: other phrasing | another`, then the answer (up to the next `##`)."""
    entries: list[Entry] = []
    question: str | None = None
    also: list[str] = []
    body: list[str] = []

    def flush() -> None:
        if question is None:
            return
        answer = "\n".join(body).strip()
        if not answer:
            raise ValueError(f"entry {question!r} has no answer")
        entries.append(Entry(question, answer, also))

    for line in text.splitlines():
        if line.startswith("## "):
            flush()
            question, also, body = line[3:].strip(), [], []
        elif question is not None:
            match = _ALSO.match(line.strip())
            if match and not body:
                also = [p.strip() for p in match.group(1).split("|") if p.strip()]
            else:
                body.append(line)
    flush()
    return entries


class KnowledgeBaseSuggester:
    name = "knowledge_base"

    def __init__(self, entries: Sequence[Entry], min_confidence: float = 0.5) -> None:
        self.entries = list(entries)
        self.min_confidence = min_confidence
        self._stemmer = Stemmer.Stemmer("english")
        phrasings = [(index, text) for index, entry in enumerate(self.entries) for text in entry.phrasings]
        self._entry_of = np.array([index for index, _ in phrasings])
        self._vocabularies = [vocabulary(" ".join([*entry.phrasings, entry.answer])) for entry in self.entries]
        tokens = self._tokens([text for _, text in phrasings])
        self._bm25 = bm25s.BM25()
        self._bm25.index(bm25s.tokenize([" ".join(t) for t in tokens], stopwords=None, show_progress=False),
                         show_progress=False)  # fmt: skip
        # Each phrasing's score against itself: the most a question can earn on it.
        self._self_scores = np.array(
            [self._bm25.get_scores(t)[i] if t else 0.0 for i, t in enumerate(tokens)], dtype=np.float64
        )
        self._terms = [frozenset(t) for t in tokens]
        n = len(tokens)
        df: dict[str, int] = {}
        for terms in self._terms:
            for term in terms:
                df[term] = df.get(term, 0) + 1
        self._idf = {term: math.log(1 + (n - d + 0.5) / (d + 0.5)) for term, d in df.items()}
        self._unseen_idf = math.log(1 + (n + 0.5) / 0.5)

    @classmethod
    def from_file(cls, path: str | Path, min_confidence: float = 0.5) -> KnowledgeBaseSuggester:
        return cls(load_entries(Path(path)), min_confidence)

    def _tokens(self, texts: list[str]) -> list[list[str]]:
        tokens = bm25s.tokenize(
            texts,
            stopwords=STOPWORDS,
            stemmer=self._stemmer,
            token_pattern=TOKEN_PATTERN,
            show_progress=False,
            return_ids=False,
        )
        return [list(t) for t in tokens]

    def rank(self, question: str) -> tuple[Entry, float] | None:
        """The best entry for `question` and its confidence (0-1), whatever the threshold."""
        (tokens,) = self._tokens([question])
        if not tokens:
            return None
        scores = self._bm25.get_scores(tokens)
        covered = np.minimum(
            1.0, np.divide(scores, self._self_scores, out=np.zeros_like(scores), where=self._self_scores > 0)
        )
        weights = {term: self._idf.get(term, self._unseen_idf) for term in tokens}
        total = sum(weights.values())
        covering = np.array([sum(w for term, w in weights.items() if term in terms) / total for terms in self._terms])
        confidence = np.sqrt(covered * covering) * self._specifics_factor(question)[self._entry_of]
        best = int(np.argmax(confidence))
        return self.entries[int(self._entry_of[best])], float(confidence[best])

    def _specifics_factor(self, question: str) -> np.ndarray:
        """Per entry: MISSING_SPECIFIC_FACTOR to the power of the question's specifics it does not mention."""
        wanted = specifics(question)
        absent = np.array([missing(wanted, known) for known in self._vocabularies], dtype=np.float64)
        factor: np.ndarray = MISSING_SPECIFIC_FACTOR**absent
        return factor

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def suggest(
        self,
        question: str,
        context: Sequence[ContextLine],
        session_id: str,
        on_partial: PartialSink | None = None,
    ) -> Answer | None:
        # A few hundred microseconds for a KB of this size: cheaper inline than a thread hop.
        ranked = self.rank(question)
        if ranked is None or ranked[1] < self.min_confidence:
            return None
        entry, confidence = ranked
        return Answer(entry.answer, round(confidence, 3), "knowledge_base")
