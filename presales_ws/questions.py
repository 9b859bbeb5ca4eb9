"""Does an utterance read as a question? The evidence the speaker tracker uses to tell the customer apart.

A word-level heuristic rather than a model, so it costs nothing per final and behaves the same on every engine,
with or without punctuation.
"""

from __future__ import annotations

import re

INTERROGATIVES = frozenset({"what", "how", "when", "where", "why", "who", "whom", "which", "whose"})
AUXILIARIES = frozenset(
    {
        "do", "does", "did", "can", "could", "will", "would", "should", "shall", "may", "might", "must",
        "is", "are", "was", "were", "am", "have", "has", "had",
        "don't", "doesn't", "didn't", "can't", "couldn't", "won't", "wouldn't", "shouldn't",
        "isn't", "aren't", "wasn't", "weren't", "haven't", "hasn't",
    }
)  # fmt: skip
# What may follow an auxiliary that opens a question. "a"/"an" are left out on purpose: "Have a look at the
# dashboard" and "Have a great day" are things a consultant says, not asks.
SUBJECTS = frozenset(
    {
        "i", "you", "we", "they", "he", "she", "it", "there",
        "my", "your", "our", "their", "his", "her", "its",
        "this", "that", "these", "those", "the",
        "any", "anyone", "anybody", "anything", "someone", "somebody", "something",
        "everyone", "everybody", "everything", "all", "each", "every",
    }
)  # fmt: skip
# An interrogative followed straight by one of these opens a clause, not a question: "When you log in, ...",
# "What we recommend is ...", "How it works is ..." (the consultant's demo narration).
PERSONAL_PRONOUNS = frozenset({"i", "you", "we", "they", "he", "she", "it"})
FILLERS = frozenset(
    {
        "so", "and", "but", "or", "okay", "ok", "alright", "um", "uh", "erm", "er", "ah", "oh", "hmm", "mm",
        "well", "right", "yeah", "yes", "no", "also", "now", "then", "actually", "sorry",
    }
)  # fmt: skip
EMBEDDED_REQUESTS = (
    "i'd like to know",
    "i would like to know",
    "i'd love to know",
    "i want to know",
    "i was wondering",
    "i'm wondering",
    "i am wondering",
    "i'm curious",
    "i am curious",
    "can you tell me",
    "could you tell me",
    "tell me about",
    "tell me more",
    "do you know",
    "can you explain",
    "could you explain",
    "walk me through",
    "help me understand",
)

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def is_question(text: str) -> bool:
    """True for "...?", "what/how ...", "does your ...", and embedded requests ("I was wondering whether ...")."""
    stripped = text.strip()
    if stripped.endswith("?"):
        return True
    tokens = _WORD.findall(stripped.lower().replace("\u2019", "'"))  # typographic apostrophe, as some engines emit
    spaced = f" {' '.join(tokens)} "
    if any(f" {phrase} " in spaced for phrase in EMBEDDED_REQUESTS):
        return True
    while tokens and tokens[0] in FILLERS:
        tokens.pop(0)
    if not tokens:
        return False
    first, rest = tokens[0], tokens[1:]
    if first in INTERROGATIVES:
        if first == "what" and rest and rest[0] in {"a", "an"}:
            return False  # "What a great demo": an exclamation (a question would end with "?")
        return not rest or rest[0].split("'")[0] not in PERSONAL_PRONOUNS  # "you", "we're", "it's"
    if first.split("'")[0] in INTERROGATIVES:  # "what's", "how'd": the contraction carries the auxiliary
        return True
    return first in AUXILIARIES and bool(rest) and rest[0] in SUBJECTS


# Words a finished sentence does not end on: the speaker paused mid-question ("Could you tell me how...").
# Auxiliaries are left out ("Do you know what the price is?"), and so are "this"/"that"/"it" ("Can you do that?").
OPEN_ENDINGS = frozenset(
    {
        "how", "what", "when", "where", "why", "who", "whom", "which", "whose", "whether", "if",
        "and", "or", "but", "because", "than", "so",
        "a", "an", "the", "my", "your", "our", "their", "his", "her", "its",
        "um", "uh", "erm", "er", "like",
    }
)  # fmt: skip
# "in", "on", "up", "over" are left out: they end questions as particles ("How do we log in?", "sign on").
PREPOSITIONS = frozenset(
    {
        "with", "for", "to", "of", "at", "about", "from", "into", "via", "without",
        "between", "during", "per", "across", "against",
    }
)  # fmt: skip
# A question that opens with one of these may end on a preposition: the wh-word is its object ("What is it for?",
# "Which CRMs do you integrate with?"). "How do you integrate with" has no such object: it is unfinished.
STRANDING_OPENERS = frozenset({"what", "which", "who", "whom", "whose", "where"})


def is_unfinished(text: str) -> bool:
    """True when the words stop where a sentence cannot: on a wh-word, conjunction, article or possessive, or on
    a preposition with nothing for it to govern. Punctuation is ignored: recognisers add "?" to fragments too."""
    lowered = text.lower().replace("\u2019", "'")
    tokens = _WORD.findall(lowered)
    ending = lowered.rstrip(' ?.!,;:"').split()
    if not tokens or not ending or ending[-1] != tokens[-1]:  # "sign-on", "SOC 2": the text does not end on a word
        return False
    last = tokens[-1]
    if last in OPEN_ENDINGS:
        return True
    if last not in PREPOSITIONS:
        return False
    opening = [t for t in tokens if t not in FILLERS]
    stranded = len(opening) > 2 and opening[0].split("'")[0] in STRANDING_OPENERS  # not "What about"
    return not stranded
