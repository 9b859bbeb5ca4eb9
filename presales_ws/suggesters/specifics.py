"""The specifics of a question: numbers, versions and proper names, the words a near miss gets wrong.

"Are you SOC 1 certified?" shares every word but one with "Are you SOC 2 certified?", and BM25 weighs that one
little; "Do you integrate with Pipedrive?" reads like the Salesforce entry. An entry that never mentions the
question's specifics (in its question, other phrasings or answer) is not its answer, however alike the rest.

Names are told by their capitals, as recognisers with punctuation write them (Whisper, Deepgram's
smart_format): a word with a capital that does not open a sentence ("Okta", "SOC", "iPhone"), not "I".
Recognisers misspell names they do not know ("Octa"), so a name also counts as mentioned when it sounds like
(same Soundex code) one of the entry's own names of four letters or more; numbers must match exactly.
"""

from __future__ import annotations

import re

# Spelled-out numbers, as a recogniser may write them ("SOC two"). "one" is left out: "which one", "one of".
_SPELLED = (
    "zero", "", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty",
)  # fmt: skip
NUMBER_WORDS = {word: str(value) for value, word in enumerate(_SPELLED) if word}
_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_][\w']*")
_SENTENCE_END = re.compile(r"[.?!]\s*$")
_NOT_NAMES = frozenset({"i", "i'm", "i'd", "i'll", "i've", "ok", "okay"})


def _number(token: str) -> str:
    """One spelling per number: "1,000" is "1000", "2.0" is "2", "99.90" is "99.9"."""
    token = token.replace(",", "")
    if "." in token:
        token = token.rstrip("0").rstrip(".")
    return token


def _normal(token: str) -> str:
    if token[0].isdigit():
        return _number(token)
    word = token.lower().removesuffix("'s")
    return NUMBER_WORDS.get(word, word)


def vocabulary(text: str) -> set[str]:
    """Every word and number of `text`, spelled as `specifics` spells them, and how its names sound: all
    that an entry "mentions"."""
    tokens = _TOKEN.findall(text)
    names = {soundex(t) for t in tokens if len(t) >= FUZZY_MIN_LETTERS and t.isalpha() and not t.islower()}
    return {_normal(token) for token in tokens} | names


def missing(wanted: set[str], known: set[str]) -> int:
    """How many of a question's specifics (`specifics`) an entry's `vocabulary` does not mention."""
    return sum(
        1
        for term in wanted
        if term not in known and not (len(term) >= FUZZY_MIN_LETTERS and term.isalpha() and soundex(term) in known)
    )


FUZZY_MIN_LETTERS = 4  # "AD" and "Auth0" share a code: short names must match exactly
_SOUNDEX = {letter: str(code) for code, letters in enumerate(("bfpv", "cgjkqsxz", "dt", "l", "mn", "r"), 1)
            for letter in letters}  # fmt: skip


def soundex(word: str) -> str:
    """American Soundex ("Okta" and "Octa" are O230), with a "#" no word spelling can have."""
    word = word.lower()
    codes = [word[0].upper()]
    previous = _SOUNDEX.get(word[0], "")
    for letter in word[1:]:
        code = _SOUNDEX.get(letter, "")
        if code and code != previous:
            codes.append(code)
        if letter not in "hw":
            previous = code
    return "#" + ("".join(codes) + "000")[:4]


def specifics(text: str) -> set[str]:
    """The numbers, versions and names in `text`, normalised (lower case, one spelling per number)."""
    found: set[str] = set()
    for match in _TOKEN.finditer(text):
        token = match.group()
        normal = _normal(token)
        if token[0].isdigit() or token.lower() in NUMBER_WORDS:
            found.add(normal)
            continue
        opens_sentence = not text[: match.start()].strip() or bool(_SENTENCE_END.search(text[: match.start()]))
        if not opens_sentence and token.lower() not in _NOT_NAMES and any(c.isupper() for c in token):
            found.add(normal)
    return found
