"""A tokenizer for raw tweet text that follows the conventions of the Twitter benchmarks.

URLs, @mentions, #hashtags, emoticons and emoji (with their modifiers and joiners) stay whole;
apostrophes are split from contractions (``don't`` -> ``don``, ``'``, ``t``) as in both
benchmark files, so that a model sees raw text the way it saw its training data. Every token
keeps its character offsets into the raw text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_EMOJI = (
    r"(?:[\U0001F1E6-\U0001F1FF]{2}"  # flags
    r"|[\U0001F000-\U0001FAFF\u2600-\u27BF\u2300-\u23FF\u2B00-\u2BFF]"
    r"[\uFE0F\U0001F3FB-\U0001F3FF]*"
    r"(?:\u200D[\U0001F000-\U0001FAFF\u2600-\u27BF][\uFE0F\U0001F3FB-\U0001F3FF]*)*)"
)
_TOKEN_RE = re.compile(
    "|".join(
        [
            r"(?:https?://|www\.)[^\s]+",  # URLs
            r"[@#]\w+",  # mentions and hashtags
            r"&[a-zA-Z]+;?",  # HTML entities such as &amp;
            r"[:;=][-o*']?[()\[\]dDpP/\\](?!\w)",  # emoticons
            _EMOJI,
            r"\.{2,}|…",  # ellipses
            r"\d+(?:[.,:/]\d+)*(?:st|nd|rd|th|s)?(?![^\W\d_])",  # numbers, times, 1st, 90s
            r"\w+(?:-\w+)*",  # words, hyphenated words, user_names
            r"\S",  # any other single character
        ]
    )
)


@dataclass(frozen=True, slots=True)
class Token:
    text: str
    start: int  # character offsets into the raw text, end exclusive
    end: int


def tokenize_tweet(text: str) -> list[Token]:
    """Split raw text into tokens with character offsets."""
    return [Token(m.group(), m.start(), m.end()) for m in _TOKEN_RE.finditer(text)]
