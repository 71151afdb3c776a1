"""One normal form for text, in training data and in served requests alike.

Deterministic across processes, since every label replica must reach the same content key
for the same text, and serve must hand the model the text in the form it was trained on.
"""

from __future__ import annotations

import unicodedata

# Characters that render as nothing yet split words or defeat exact matching: zero width space,
# word joiner, zero width no-break space (the BOM) and the Mongolian vowel separator. The zero
# width (non-)joiners are kept: they change how Persian, Indic and emoji text reads.
_INVISIBLE_CHARS = "\u200b\u2060\ufeff\u180e"
_INVISIBLE = dict.fromkeys(map(ord, _INVISIBLE_CHARS))


def normalise(text: str) -> str:
    """Unicode NFKC, invisible characters removed, whitespace runs collapsed, stripped.

    NFKC folds compatibility forms a user never means to be different (``ﬁ`` → ``fi``,
    full-width digits → ASCII digits, the no-break space → a space), so the same ticket typed on
    two keyboards is the same text. Every run of Unicode whitespace, newlines and tabs included,
    becomes one space: line layout is not signal for the tasks we train.
    """
    folded = unicodedata.normalize("NFKC", text)
    # translate() is the slow step: skip it when there is nothing to remove (a text that is
    # all ASCII never has any of these characters).
    if not folded.isascii() and any(char in folded for char in _INVISIBLE_CHARS):
        folded = folded.translate(_INVISIBLE)
    return " ".join(folded.split())
