"""Text that arrives in fragments (voice agents), committed at boundaries where tokenization is stable.

Byte-level BPE with Qwen's pre-tokenizer never merges across the start of a whitespace run, and a CJK
punctuation mark begins a new pre-token, so text cut just before those characters tokenizes to the same
ids piece by piece as it does whole. Anything after the last such boundary waits for more text, a flush
or the end of the input.
"""

from __future__ import annotations

from dataclasses import dataclass

# CJK sentence and clause marks: the pre-tokenizer starts a new piece at each of them.
_CJK_MARKS = frozenset("。！？，、；：…")


def _is_boundary(char: str) -> bool:
    return char.isspace() or char in _CJK_MARKS


@dataclass
class IncrementalText:
    received: str = ""
    committed: int = 0  # characters of ``received`` already handed out

    def feed(self, fragment: str, *, flush: bool = False, close: bool = False) -> str:
        """Add ``fragment``; return the newly committed text (possibly empty)."""
        self.received += fragment
        end = len(self.received) if flush or close else self._last_boundary()
        piece = self.received[self.committed : end]
        self.committed = max(self.committed, end)
        return piece

    @property
    def pending(self) -> str:
        return self.received[self.committed :]

    def _last_boundary(self) -> int:
        for index in range(len(self.received) - 1, self.committed, -1):
            if _is_boundary(self.received[index]) and not _is_boundary(self.received[index - 1]):
                return index
        return self.committed
