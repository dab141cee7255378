"""Split long text into pieces the gateway accepts, at sentence boundaries.

Boundaries are Latin ``. ! ?`` followed by whitespace (or the end) and CJK ``。！？`` anywhere, each
with any closing quotes/brackets that follow; a blank line is a boundary too (headings and list items
often have no final punctuation). A period is *not* a boundary inside a number (``3.14``: no space
follows), after a known abbreviation (``Dr.``, ``e.g.``, ``etc.``) or after a single-letter initial
(``J. Smith``) — splitting there would make the model pause mid-sentence.

``chunk_text`` then packs consecutive sentences into pieces of at most ``max_chars``. A sentence that
is still too long is cut at clause punctuation, then at whitespace; a run with none of those (a
single huge word, unpunctuated CJK) is left whole rather than cut mid-word. Pieces are stripped, and a
piece with nothing visible is dropped, so joining them gives back the text modulo white space and
invisible characters.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from itertools import pairwise

from qwen3_tts_serving.text_rules import is_blank

__all__ = ["ABBREVIATIONS", "DEFAULT_MAX_CHARS", "chunk_text", "sentence_boundaries", "split_sentences"]

# Below the gateway's default max_text_length (2000) with room for the model's own text budget;
# shorter pieces also give the first audio sooner.
DEFAULT_MAX_CHARS = 400

# Lower-case, without the final period. "no" only counts before a digit (see _is_abbreviation).
ABBREVIATIONS = frozenset(
    {
        "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "ft", "vs", "etc", "e.g", "i.e", "eg",
        "ie", "cf", "al", "approx", "dept", "est", "fig", "figs", "inc", "ltd", "co", "corp", "gen",
        "gov", "rev", "sgt", "capt", "col", "lt", "cmdr", "hon", "pres", "jan", "feb", "mar", "apr",
        "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "a.m", "p.m", "u.s", "u.k", "ph.d",
        "vol", "ch", "pp", "ed", "eds", "min", "max", "no",
    }
)  # fmt: skip

_CLOSERS = "\"'”’」』）)】]》〉»"
# Latin terminators count only before whitespace/end, so "3.14", "example.com" and "a.b" stay whole.
_LATIN_END = re.compile(rf"[.!?…]+[{re.escape(_CLOSERS)}]*(?=\s|$)")
_CJK_END = re.compile(rf"[。！？!?]+[{re.escape(_CLOSERS)}]*")
_PARAGRAPH = re.compile(r"\n[ \t]*\n\s*")
_CLAUSE_END = re.compile(rf"[,;:，；：、—]+[{re.escape(_CLOSERS)}]*")
_WHITESPACE = re.compile(r"\s+")
# The token before a period: letters/digits and inner periods ("e.g", "U.S", "Ph.D").
_TOKEN_BEFORE = re.compile(r"([^\W_](?:[^\W_]|\.(?=[^\W_]))*)\.+$")


def _is_abbreviation(text: str, period_index: int) -> bool:
    """Whether the '.' at ``period_index`` ends an abbreviation or initial rather than a sentence."""
    match = _TOKEN_BEFORE.search(text, 0, period_index + 1)
    if match is None:
        return False
    token = match.group(1)
    lowered = token.lower()
    if lowered == "no":
        # "No. 5" is an abbreviation, "I said no. Then" is a sentence.
        return bool(re.match(r"\s*\d", text[period_index + 1 :]))
    if lowered in ABBREVIATIONS:
        return True
    # A lone capital is an initial ("J. R. R. Tolkien"); a lone lower-case letter is rare as a word.
    return len(token) == 1 and token.isalpha() and token.isupper()


def _latin_is_boundary(text: str, match: re.Match[str]) -> bool:
    terminators = match.group(0).rstrip(_CLOSERS)
    if terminators != ".":
        return True  # "!", "?", "...", "?!" always end a sentence when followed by whitespace
    return not _is_abbreviation(text, match.start())


def sentence_boundaries(text: str) -> list[int]:
    """Sorted cut positions (end offsets) strictly inside ``text``, at sentence ends."""
    cuts: set[int] = set()
    for match in _LATIN_END.finditer(text):
        if _latin_is_boundary(text, match):
            cuts.add(match.end())
    cuts.update(match.end() for match in _CJK_END.finditer(text))
    cuts.update(match.start() for match in _PARAGRAPH.finditer(text))
    return sorted(cut for cut in cuts if 0 < cut < len(text))


def _cut(text: str, cuts: list[int]) -> list[str]:
    pieces, start = [], 0
    for cut in [*cuts, len(text)]:
        piece = text[start:cut].strip()
        # A piece of only invisible characters (a trailing U+200B or BOM cut off by itself) has nothing to
        # speak, and the server refuses it as blank: sent as the last of a long text's pieces, it failed a
        # stream whose audio had all but finished.
        if not is_blank(piece):
            pieces.append(piece)
        start = cut
    return pieces


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text``, in order, stripped, empty ones dropped."""
    return _cut(text, sentence_boundaries(text))


Level = Callable[[str, int, int], list[int]]


def _pattern_level(pattern: re.Pattern[str], *, at_end: bool) -> Level:
    def cuts(text: str, start: int, end: int) -> list[int]:
        return [
            cut
            for m in pattern.finditer(text, start, end)
            if start < (cut := m.end() if at_end else m.start()) < end
        ]

    return cuts


def _too_long(text: str, start: int, end: int, max_chars: int) -> bool:
    return len(text[start:end].strip()) > max_chars


def _split_span(text: str, start: int, end: int, max_chars: int, levels: list[Level]) -> set[int]:
    """Cuts inside ``text[start:end]`` so that every piece fits, using the strongest boundaries first.

    Units between this level's cuts are packed greedily while they fit; a unit that is too long on
    its own is split at the next (weaker) level and its pieces are not merged with neighbours, so a
    piece never straddles a stronger boundary than it has to.
    """
    if not levels or not _too_long(text, start, end, max_chars):
        return set()
    bounds = [start, *levels[0](text, start, end), end]
    chosen: set[int] = set()
    run_start = start
    for a, b in pairwise(bounds):
        if _too_long(text, a, b, max_chars):
            chosen.update({a, b}, _split_span(text, a, b, max_chars, levels[1:]))
            run_start = b
        elif _too_long(text, run_start, b, max_chars):
            chosen.add(a)
            run_start = a
    return {cut for cut in chosen if start < cut < end}


def chunk_text(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> list[str]:
    """Pieces of at most ``max_chars`` (unless a piece has no boundary at all), in order.

    Pieces are slices of ``text`` (stripped), so whitespace inside a piece is kept as written.
    """
    if max_chars < 1:
        raise ValueError("max_chars must be >= 1")
    sentence_cuts = sentence_boundaries(text)  # computed on the whole text: abbreviations need context
    levels: list[Level] = [
        lambda _text, start, end: [cut for cut in sentence_cuts if start < cut < end],
        _pattern_level(_CLAUSE_END, at_end=True),
        _pattern_level(_WHITESPACE, at_end=False),
    ]
    return _cut(text, sorted(_split_span(text, 0, len(text), max_chars, levels)))
