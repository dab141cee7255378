"""What counts as a blank text, the one definition for every entry point (the gateway's schemas, the
engine's own checks for clients that call Triton directly, the CLI).

A text with nothing visible in it (white space, control characters, format characters such as U+200B
ZERO WIDTH SPACE or U+FEFF) has nothing to speak: refused like an empty one. Texts that contain such
characters among visible ones (emoji joined by U+200D, a right-to-left mark in Hebrew) are speech."""

from __future__ import annotations

import unicodedata

# Unicode general categories with no visible glyph: controls (Cc) and format characters (Cf).
INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf"})


def is_invisible(char: str) -> bool:
    return char.isspace() or unicodedata.category(char) in INVISIBLE_CATEGORIES


def is_blank(value: str) -> bool:
    """True when ``value`` has no visible character."""
    return all(is_invisible(char) for char in value)
