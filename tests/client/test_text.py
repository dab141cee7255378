"""The sentence splitter: boundaries, the things that are not boundaries, and properties over random text."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qwen3_tts_client.text import chunk_text, sentence_boundaries, split_sentences

_WS = re.compile(r"\s+")
_CLAUSE = ",;:，；：、—"
_CLOSERS = re.escape("\"'”’」』）)】]》〉»")


def squash(text: str) -> str:
    return _WS.sub("", text)


# --------------------------------------------------------------------------------------- sentences


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello there. How are you? Fine!", ["Hello there.", "How are you?", "Fine!"]),
        ("你好。我很好！真的吗？好的", ["你好。", "我很好！", "真的吗？", "好的"]),
        ("Pi is 3.14 roughly. Next.", ["Pi is 3.14 roughly.", "Next."]),
        ("Dr. Smith arrived. He sat.", ["Dr. Smith arrived.", "He sat."]),
        ("Use fruit, e.g. apples. Or not.", ["Use fruit, e.g. apples.", "Or not."]),
        ("That is, i.e. the end. Yes.", ["That is, i.e. the end.", "Yes."]),
        (
            "Mr. and Mrs. Jones left at 5 p.m. today. Bye.",
            ["Mr. and Mrs. Jones left at 5 p.m. today.", "Bye."],
        ),
        ("J. R. R. Tolkien wrote it. True.", ["J. R. R. Tolkien wrote it.", "True."]),
        ("See No. 5 here. I said no. Done.", ["See No. 5 here.", "I said no.", "Done."]),
        ("Wait... what?! Really.", ["Wait...", "what?!", "Really."]),
        ('He said "Stop." Then left.', ['He said "Stop."', "Then left."]),
        ("Visit example.com today. Ok.", ["Visit example.com today.", "Ok."]),
        ("Version 2.0.1 shipped. Great.", ["Version 2.0.1 shipped.", "Great."]),
        ("Title\n\nBody text without end", ["Title", "Body text without end"]),
        ("「你好。」他说。", ["「你好。」", "他说。"]),
        ("Mixed 中文。And English. 再见！", ["Mixed 中文。", "And English.", "再见！"]),
        ("", []),
        ("   \n ", []),
        ("no terminal punctuation", ["no terminal punctuation"]),
    ],
)
def test_split_sentences(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


def test_etc_is_not_a_boundary_inside_a_sentence() -> None:
    assert split_sentences("Apples, pears, etc. are fruit. Yes.") == [
        "Apples, pears, etc. are fruit.",
        "Yes.",
    ]


def test_boundaries_are_inside_the_text() -> None:
    text = "One. Two. Three."
    assert sentence_boundaries(text) == [4, 9]


# --------------------------------------------------------------------------------------- chunks


def test_short_text_is_one_piece() -> None:
    assert chunk_text("One. Two. Three.", 100) == ["One. Two. Three."]


def test_a_piece_with_nothing_visible_is_dropped() -> None:
    # Cut off by itself, a trailing zero-width space or BOM was a piece the server refuses as blank.
    assert chunk_text("Hello there. \u200b\ufeff", 12) == ["Hello there."]
    assert split_sentences("One. \u2060. Two.") == ["One.", "\u2060.", "Two."]  # a visible period stays
    assert split_sentences("One.\n\n\u200b\n\nTwo.") == ["One.", "Two."]
    assert chunk_text("\u200b \ufeff", 5) == []


def test_sentences_are_packed_up_to_the_limit() -> None:
    assert chunk_text("One one. Two two. Three three.", 18) == ["One one. Two two.", "Three three."]


def test_long_sentence_splits_at_clauses_then_spaces() -> None:
    text = "alpha beta, gamma delta, epsilon zeta eta theta iota kappa."
    pieces = chunk_text(text, 20)
    assert pieces[:2] == ["alpha beta,", "gamma delta,"]
    assert all(len(piece) <= 20 for piece in pieces)
    assert squash("".join(pieces)) == squash(text)


def test_a_piece_never_straddles_a_sentence_end_when_a_sentence_is_split() -> None:
    pieces = chunk_text("Short. " + "word " * 10 + "end. Tail.", 20)
    assert pieces[0] == "Short."
    assert pieces[-1] == "Tail."


def test_unbreakable_run_is_kept_whole() -> None:
    assert chunk_text("x" * 50, 10) == ["x" * 50]
    assert chunk_text("长" * 30, 10) == ["长" * 30]


def test_cjk_pieces_keep_no_spaces() -> None:
    pieces = chunk_text("第一句。第二句。第三句。", 8)
    assert pieces == ["第一句。第二句。", "第三句。"]


def test_inner_whitespace_is_kept_as_written() -> None:
    assert chunk_text("Line one.\nLine  two.", 100) == ["Line one.\nLine  two."]


def test_invalid_limit() -> None:
    with pytest.raises(ValueError):
        chunk_text("text", 0)


# --------------------------------------------------------------------------------------- properties

_ALPHABET = st.sampled_from(
    [*"abcdefghij ABC  \n\t.,;:!?0123456789", "。", "！", "？", "，", "你", "好", "Dr.", "e.g.", "3.14", "…"]
)
texts = st.lists(_ALPHABET, max_size=120).map("".join)
limits = st.integers(min_value=1, max_value=60)


@settings(max_examples=200, deadline=None)
@given(texts, limits)
def test_joining_pieces_gives_back_the_text_modulo_whitespace(text: str, limit: int) -> None:
    assert squash("".join(chunk_text(text, limit))) == squash(text)


@settings(max_examples=200, deadline=None)
@given(texts, limits)
def test_pieces_are_stripped_and_non_empty(text: str, limit: int) -> None:
    for piece in chunk_text(text, limit):
        assert piece and piece == piece.strip()


@settings(max_examples=200, deadline=None)
@given(texts, limits)
def test_no_piece_over_the_limit_unless_it_has_no_boundary(text: str, limit: int) -> None:
    for piece in chunk_text(text, limit):
        if len(piece) > limit:
            # Nothing left to cut at: no sentence end, no clause punctuation, no whitespace.
            assert sentence_boundaries(piece) == []
            assert not re.search(r"\s", piece)
            assert not re.search(rf"[{_CLAUSE}][^{_CLAUSE}{_CLOSERS}]", piece)


@settings(max_examples=200, deadline=None)
@given(texts)
def test_sentences_join_back_to_the_text(text: str) -> None:
    assert squash("".join(split_sentences(text))) == squash(text)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.from_regex(r"[A-Za-z]{1,8}", fullmatch=True),
            st.builds(lambda a, b: f"{a}.{b}", st.integers(0, 999), st.integers(0, 999)),
        ),
        min_size=1,
        max_size=20,
    ),
    limits,
)
def test_decimal_numbers_are_never_split(words: list[str], limit: int) -> None:
    text = " ".join(words) + "."
    pieces = chunk_text(text, max(limit, 8))
    for word in words:
        if "." in word:
            assert any(word in piece for piece in pieces)
