"""Name pools and type-neutral tweet templates of the synthetic corpus.

The names are invented words, so no pretrained text encoder knows what they refer to, and the
templates say nothing about what kind of thing a name is: "who else saw {0} ?" reads as well for a
person as for a place, a company or a product. Together with the corpus assigning every name to
every type equally often, this makes the text alone unable to decide an entity's type, unless
the corpus asks for words that tell it (``TYPE_HINTS`` for entities left out of their image,
``TEXT_CUES`` for text cues) or for words that say where each entity is (``POSITION_WORDS``).
"""

from __future__ import annotations

import random
import string
from collections.abc import Sequence

#: The entity types, in the order used for counts and cues.
TYPES: tuple[str, ...] = ("PER", "LOC", "ORG", "MISC")

MIN_TOKENS = 5
MAX_TOKENS = 25

#: Invented names of 1-3 Title Case tokens; each is used as every type equally often.
NAMES: tuple[str, ...] = (
    # one token
    "Velmora", "Kestin", "Orvane", "Talveth", "Brisco", "Zandor", "Quillon", "Ysolde",
    "Caddick", "Fennick", "Lirae", "Dovrin", "Okello", "Marisko", "Thandry", "Ulvani",
    "Presca", "Gorvath", "Emberly", "Ravik", "Solenne", "Taversk", "Nimora", "Haskel",
    "Wendrith", "Joravi", "Cressidy", "Palvo", "Ixora", "Bramwick", "Delphar", "Korrin",
    "Amsel", "Vantor", "Serafi", "Lumenor", "Odrey", "Pellam", "Zuriko", "Gantry",
    # two tokens
    "Arlo Venn", "Sable Rook", "Tamsin Orlo", "Corvin Adair", "Juno Kessel", "Miro Lantz",
    "Esme Danvik", "Oren Blay", "Lysa Corde", "Teo Marrak", "Nell Ostrow", "Remy Falk",
    "Ivo Santel", "Kaia Dorne", "Bastien Rue", "Odile Prax", "Cato Wren", "Fia Moravec",
    "Lorcan Tey", "Ines Valko", "Dax Holloran", "Mira Esk", "Ansel Quarry", "Zora Pim",
    "Hugo Stray", "Clio Vantes", "Pax Orrin", "Wynn Calder", "Rhea Tolliver", "Sully Brandt",
    "Nico Ferrant", "Ada Kilner", "Ezra Lund", "Maren Oakes", "Tove Sandell", "Kit Marlowe",
    "Silas Penrow", "Una Becket", "Reno Vachel", "Lark Dimond",
    # three tokens
    "Ilsa Dar Moreau", "Kip Van Ostrand", "Nova Teague Bell", "Rafe De Lacy",
    "Mae Solis Grant", "Jory Ap Rhys", "Lena Vos Kettering", "Otto Bram Lisle",
    "Cyra Le Bon", "Abel Nash Corrigan", "Tilde Van Aken", "Rory St Clement",
    "Vida Mae Orsolo", "Benno Du Pree", "Ike Fenn Harlow", "Pia Dal Monte",
)  # fmt: skip

#: Templates as space-separated tokens; "{0}" and "{1}" stand for the whole names.
TEMPLATES_ONE: tuple[str, ...] = (
    "can't stop talking about {0} today",
    "{0} again ... unbelievable",
    "who else saw {0} ?",
    "so much love for {0} right now",
    "anyone else obsessed with {0} ?",
    "throwback to {0} last summer",
    "{0} is trending and i know why",
    "just heard the news about {0}",
    "finally got to see {0} !",
    "not sure what to think about {0} tbh",
    "{0} never disappoints",
    "big day for {0}",
    "{0} was everywhere this week",
    "this photo of {0} made my day",
    "my whole timeline is {0} today",
    "honestly {0} deserves more attention",
    "nobody talks about {0} enough",
    "{0} , what a time to be alive",
    "still thinking about {0} from yesterday",
    "look who showed up in my feed : {0}",
    "new pics of {0} just dropped",
    "can we talk about {0} for a second ?",
    "{0} in the news again , wow",
    "couldn't have asked for more , thanks {0}",
    "everyone is asking about {0} lately",
    "guess where i ended up tonight ... {0}",
    "saw this and thought of {0}",
    "rating {0} a solid ten out of ten",
)

TEMPLATES_TWO: tuple[str, ...] = (
    "{0} and {1} in one picture , what a day",
    "from {0} to {1} , wild week",
    "{0} vs {1} ... who wins ?",
    "can't decide between {0} and {1}",
    "{0} first , then {1}",
    "saw {0} and {1} today",
    "{0} meets {1} , finally",
    "never thought {0} would end up next to {1}",
    "{0} with {1} again ? ok then",
    "everyone talks about {0} but i'm here for {1}",
    "{0} on the left , {1} on the right",
    "today was all about {0} and {1}",
    "still can't believe {0} and {1} in the same shot",
    "{0} or {1} ? tell me below",
    "big news for {0} and {1} this morning",
    "first {0} , now {1} ... what next ?",
)

TEMPLATES_NONE: tuple[str, ...] = (
    "what a day , honestly",
    "can't sleep again tonight",
    "this weather though ... seriously",
    "monday mood , send coffee please",
    "best view from my window today",
    "nothing beats a lazy sunday afternoon",
    "who else is still awake ?",
    "so tired but so happy right now",
    "new week , new goals , let's go",
    "random photo dump , enjoy",
    "not a bad way to end the week",
    "can't believe it's already friday again",
)

HANDLES: tuple[str, ...] = (
    "daily_buzz", "mike_p", "thecityfeed", "lou_writes", "newsdesk", "jj_photos", "kay_tee",
    "weekend_vibes", "sam_on_air", "the_real_dee", "trendwatch", "nora_b",
)  # fmt: skip

HASHTAGS: tuple[str, ...] = (
    "#tbt", "#weekend", "#mood", "#news", "#photooftheday", "#love", "#instagood",
    "#friday", "#nofilter", "#mondaymotivation", "#trending", "#latergram",
)  # fmt: skip

#: Words put before a name that is not in the image, so that the text tells its type instead.
TYPE_HINTS: dict[str, tuple[str, ...]] = {
    "PER": ("my friend", "our coach", "the singer"),
    "LOC": ("the town of", "the island of", "the city of"),
    "ORG": ("the company", "the club", "the agency"),
    "MISC": ("the new album", "the gadget", "the film"),
}

#: Words around a name that tell its type while the image still shows the cue (``--text-cues``),
#: "{}" standing for the name: the hints above and more, each at most three words, so that every
#: template still fits in :data:`MAX_TOKENS` (``TYPE_HINTS`` itself stays as it is: it decides
#: the random draws of ``--ungroundable`` corpora).
TEXT_CUES: dict[str, tuple[str, ...]] = {
    "PER": (
        "my friend {}", "our coach {}", "the singer {}", "coach {}", "actor {}", "striker {}",
        "mr {}", "the actress {}",
    ),
    "LOC": (
        "the town of {}", "the island of {}", "the city of {}", "flights to {}",
        "the streets of {}", "downtown {}", "the beaches of {}", "the weather in {}",
    ),
    "ORG": (
        "the company {}", "the club {}", "the agency {}", "shares of {}", "the ceo of {}",
        "{} headquarters", "{} inc", "workers at {}",
    ),
    "MISC": (
        "the new album {}", "the gadget {}", "the film {}", "the new {} phone", "the {} sneakers",
        "the game {}", "the {} app", "{} tickets",
    ),
}  # fmt: skip

#: What a post with position words says after a name: where in the image its cue is.
POSITION_WORDS: dict[str, str] = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "top left": "in the top left",
    "top right": "in the top right",
    "bottom left": "in the bottom left",
    "bottom right": "in the bottom right",
}

#: Words of a template that already say where something is: such templates are not used in posts
#: with position words, whose positions need not be left and right.
_PLACE_WORDS = frozenset({"left", "right", "top", "bottom"})

_TEMPLATES_BY_COUNT: dict[int, tuple[str, ...]] = {
    0: TEMPLATES_NONE,
    1: TEMPLATES_ONE,
    2: TEMPLATES_TWO,
}


def _handle(rng: random.Random) -> str:
    """An @mention, sometimes with digits, as tweets have them (lowercase: not a name)."""
    handle = rng.choice(HANDLES)
    if rng.random() < 0.4:
        handle += str(rng.randrange(10, 100))
    return "@" + handle


def _url(rng: random.Random) -> str:
    """A shortened link like those that end many tweets."""
    code = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(8))
    return f"http://t.co/{code}"


def _fill(template: str, names: Sequence[str]) -> tuple[list[str], list[tuple[int, int]]]:
    """Tokens of a template with the names put in, and the token span of each name."""
    tokens: list[str] = []
    spans: list[tuple[int, int]] = [(0, 0)] * len(names)
    for word in template.split():
        if word.startswith("{") and word.endswith("}"):
            slot = int(word[1:-1])
            name_tokens = names[slot].split()
            spans[slot] = (len(tokens), len(tokens) + len(name_tokens))
            tokens.extend(name_tokens)
        else:
            tokens.append(word)
    return tokens, spans


def pattern_words(pattern: str) -> tuple[list[str], list[str]]:
    """The words a pattern such as ``"the new {} phone"`` puts before and after its name."""
    before, after = pattern.split("{}")
    return before.split(), after.split()


def extra_words(pattern: str | None) -> int:
    """How many words a pattern adds to a post (0 for ``None``)."""
    return 0 if pattern is None else sum(map(len, pattern_words(pattern)))


def with_type_words(
    tokens: Sequence[str],
    spans: Sequence[tuple[int, int]],
    patterns: Sequence[str | None],
) -> tuple[list[str], list[tuple[int, int]]]:
    """``tokens`` with each name wrapped in its pattern's words ("{}" is the name), and the spans
    moved to match (a ``None`` pattern leaves its name as it is)."""
    out = list(tokens)
    moved = list(spans)
    # right to left, so the spans still to handle keep their offsets
    for index in sorted(range(len(spans)), key=lambda i: spans[i][0], reverse=True):
        pattern = patterns[index]
        if pattern is None:
            continue
        before, after = pattern_words(pattern)
        start, end = moved[index]
        out[end:end] = after
        out[start:start] = before
        for other, (s, e) in enumerate(moved):
            if other == index:
                moved[other] = (s + len(before), e + len(before))
            elif s >= end:
                moved[other] = (s + len(before) + len(after), e + len(before) + len(after))
    return out, moved


def with_type_hints(
    tokens: Sequence[str],
    spans: Sequence[tuple[int, int]],
    hints: Sequence[str | None],
) -> tuple[list[str], list[tuple[int, int]]]:
    """``tokens`` with each hint's words put right before its name's span, and the spans moved
    to match (a ``None`` hint leaves its name as it is)."""
    return with_type_words(tokens, spans, [None if h is None else h + " {}" for h in hints])


def fitting_templates(names: Sequence[str], reserve: int, placed: bool) -> tuple[str, ...]:
    """The templates for ``names`` that stay within :data:`MAX_TOKENS` with ``reserve`` added
    words (the shortest if none does); with ``placed``, none that names a place in the image."""
    templates = [
        t for t in _TEMPLATES_BY_COUNT[len(names)] if not (placed and _PLACE_WORDS & set(t.split()))
    ]
    names_length = sum(len(name.split()) for name in names)

    def length(template: str) -> int:
        return len(template.split()) - len(names) + names_length + reserve

    fitting = tuple(t for t in templates if length(t) <= MAX_TOKENS)
    return fitting or (min(templates, key=length),)


def compose_post(
    rng: random.Random,
    names: Sequence[str],
    reserve: int = 0,
    templates: Sequence[str] | None = None,
) -> tuple[list[str], list[tuple[int, int]]]:
    """A tweet-like post mentioning ``names`` in order: tokens and each name's ``(start, end)``.

    Decorations (retweet prefix, @mentions, hashtags, a link) are chosen independently of the
    types, so they carry no information about them; the post always has 5-25 tokens, counting
    ``reserve`` tokens that the caller adds afterwards (type hints, position words). The template
    comes from ``templates`` if given (see :func:`fitting_templates`).
    """
    template = rng.choice(_TEMPLATES_BY_COUNT[len(names)] if templates is None else templates)
    body, spans = _fill(template, names)
    prefix: list[str] = []
    roll = rng.random()
    if roll < 0.2:
        prefix = ["RT", _handle(rng), ":"]
    elif roll < 0.35:
        prefix = [_handle(rng)]
    suffix = rng.sample(HASHTAGS, k=rng.choice((0, 0, 1, 2)))
    if rng.random() < 0.3:
        suffix.append(_url(rng))
    while len(prefix) + len(body) + len(suffix) + reserve > MAX_TOKENS and (prefix or suffix):
        if suffix:
            suffix.pop()
        else:
            prefix = []
    while len(prefix) + len(body) + len(suffix) + reserve < MIN_TOKENS:
        suffix.append(rng.choice(HASHTAGS))
    shift = len(prefix)
    return prefix + body + suffix, [(start + shift, end + shift) for start, end in spans]
