"""Does an utterance read as a question? The evidence the speaker tracker uses to tell the customer apart."""

from __future__ import annotations

import re

INTERROGATIVES = frozenset({"what", "how", "when", "where", "why", "who", "whom", "which", "whose"})
AUXILIARIES = frozenset(
    {
        "do",
        "does",
        "did",
        "can",
        "could",
        "will",
        "would",
        "should",
        "shall",
        "may",
        "might",
        "must",
        "is",
        "are",
        "was",
        "were",
        "am",
        "have",
        "has",
        "had",
        "isn't",
        "aren't",
        "doesn't",
        "don't",
        "can't",
        "won't",
        "wouldn't",
        "couldn't",
        "shouldn't",
        "didn't",
        "haven't",
        "hasn't",
    }
)
SUBJECTS = frozenset(
    {
        "you",
        "your",
        "we",
        "our",
        "i",
        "it",
        "its",
        "they",
        "their",
        "there",
        "this",
        "that",
        "these",
        "those",
        "he",
        "she",
        "the",
        "a",
        "an",
        "any",
        "anyone",
        "someone",
        "somebody",
        "all",
        "each",
        "every",
    }
)
FILLERS = frozenset({"so", "and", "but", "okay", "ok", "um", "uh", "well", "right", "also", "now", "then", "hmm"})
EMBEDDED_REQUESTS = (
    "i'd like to know",
    "i would like to know",
    "i was wondering",
    "i'm wondering",
    "i am wondering",
    "can you tell me",
    "could you tell me",
    "tell me about",
    "tell me more",
    "i'd love to know",
    "i want to know",
    "do you know",
    "can you explain",
    "could you explain",
    "walk me through",
    "i'm curious",
    "i am curious",
)

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def is_question(text: str) -> bool:
    """True for "...?", "what/how ...", "does your ...", and embedded requests ("I was wondering whether ...")."""
    stripped = text.strip()
    if not stripped:
        return False
    if stripped.endswith("?"):
        return True
    lowered = stripped.lower().replace("\u2019", "'")  # typographic apostrophe
    if any(phrase in lowered for phrase in EMBEDDED_REQUESTS):
        return True
    tokens = [t for t in _WORD.findall(lowered)]
    while tokens and tokens[0] in FILLERS:
        tokens.pop(0)
    if not tokens:
        return False
    if tokens[0] in INTERROGATIVES:
        return True
    return tokens[0] in AUXILIARIES and len(tokens) > 1 and tokens[1] in SUBJECTS
