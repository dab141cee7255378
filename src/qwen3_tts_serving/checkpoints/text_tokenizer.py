"""A small byte-level BPE vocabulary that ``Qwen2TokenizerFast`` loads like the real Qwen one.

The real vocabulary (151643 BPE tokens) is not available, so this one has the 256 byte tokens (any text of
any script or emoji tokenizes, byte by byte at worst), about 1400 merges for common English words, unused
placeholders up to id 151642, and the Qwen special tokens at their REAL ids (151643..151675, read from the
reference tokenizer_config.json). The special tokens are also entries of vocab.json: that is what makes the
fast tokenizer keep their ids; without them it would append the added tokens right after the last BPE id.
Every id stays below the talker's text_vocab_size (151936).

The model slices the prompt ``<|im_start|>assistant\\n{text}<|im_end|>\\n<|im_start|>assistant\\n`` as
``[:3]``, ``[3:-5]`` and ``[-5:]``, so "assistant" must be one token and "\\n" must never merge with a
neighbour: the merge chains of the role words come first (lowest rank) and no merge involves "\\n".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from qwen3_tts_serving.checkpoints.reference import JsonDict

# Role words of the chat template first: their merge chains get the lowest ranks, so nothing splits them.
ROLE_WORDS = ("assistant", "user", "system")
COMMON_WORDS = (
    "the be to of and a in that have it for not on with he as you do at this but his by from they we say "
    "her she or an will my one all would there their what so up out if about who get which go me when make "
    "can like time no just him know take people into year your good some could them see other than then now "
    "look only come its over think also back after use two how our work first well way even new want because "
    "any these give day most us is are was were has had been said did hello world speech voice sound audio "
    "text model test clone design speak today thank thanks please yes very here where why morning evening "
    "weather nice great quick brown fox jumps lazy dog one two three four five reference short clip sentence"
).split()


@dataclass(frozen=True)
class TextTokenizerFiles:
    vocab: dict[str, int]
    merges: list[str]
    tokenizer_config: JsonDict

    def write(self, folder: Path) -> None:
        (folder / "vocab.json").write_text(json.dumps(self.vocab, ensure_ascii=False) + "\n", "utf-8")
        (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(self.merges) + "\n", "utf-8")
        (folder / "tokenizer_config.json").write_text(
            json.dumps(self.tokenizer_config, indent=2, ensure_ascii=False) + "\n", "utf-8"
        )


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (the byte-level alphabet of Qwen's BPE)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    mapping = {b: chr(b) for b in printable}
    shift = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + shift)
            shift += 1
    # Same order as GPT-2 / Qwen: printable bytes first, then the shifted ones.
    return {b: mapping[b] for b in printable + [b for b in range(256) if b not in printable]}


def _merge_chain(word: str, vocab: dict[str, int], merges: list[str], seen: set[str]) -> None:
    """Merges that build ``word`` left to right, one character at a time (each makes a new token)."""
    current = word[0]
    for char in word[1:]:
        merge = f"{current} {char}"
        current += char
        if merge not in seen:
            seen.add(merge)
            merges.append(merge)
        vocab.setdefault(current, len(vocab))


def build_text_tokenizer(
    tokenizer_config: JsonDict, text_vocab_size: int, pinned: dict[str, int] | None = None
) -> TextTokenizerFiles:
    """Vocabulary, merges and the (real, unchanged) tokenizer_config.json.

    ``pinned`` moves tokens to given ids (config.json's ``assistant_token_id`` is the real id of
    "assistant"; the model does not read it at inference, but the layout then matches).
    """
    byte_chars = bytes_to_unicode()
    vocab: dict[str, int] = {char: index for index, char in enumerate(byte_chars.values())}
    merges: list[str] = []
    seen: set[str] = set()
    space = byte_chars[ord(" ")]
    for word in ROLE_WORDS:
        _merge_chain(word, vocab, merges, seen)
    for word in COMMON_WORDS:
        _merge_chain(space + word, vocab, merges, seen)
        _merge_chain(word, vocab, merges, seen)
        _merge_chain(space + word.capitalize(), vocab, merges, seen)
        _merge_chain(word.capitalize(), vocab, merges, seen)
    for token, token_id in (pinned or {}).items():
        vocab[token] = token_id
    special = {
        entry["content"]: int(token_id)
        for token_id, entry in tokenizer_config["added_tokens_decoder"].items()
    }
    _fill_placeholders(vocab, first_special_id=min(special.values()))
    vocab.update(special)
    _check_ids(vocab, text_vocab_size)
    return TextTokenizerFiles(vocab=vocab, merges=merges, tokenizer_config=tokenizer_config)


def _fill_placeholders(vocab: dict[str, int], first_special_id: int) -> None:
    """Make the BPE ids contiguous up to the first special id, like the real 151643-token vocabulary.

    With holes the tokenizers library prints every missing id when it serialises the vocabulary (which
    transformers does at load time), and ``vocab_size`` would stay below 100000, so transformers would skip
    the split-regex fix it applies to the real vocabulary. No merge produces a placeholder, so no text
    ever tokenizes to one.
    """
    used = set(vocab.values())
    for token_id in range(first_special_id):
        if token_id not in used:
            vocab[f"<|placeholder_{token_id}|>"] = token_id


def _check_ids(vocab: dict[str, int], text_vocab_size: int) -> None:
    ids = list(vocab.values())
    if len(set(ids)) != len(ids):
        raise ValueError("text vocabulary has colliding ids (merges or pinned tokens overlap other ids)")
    if max(ids) >= text_vocab_size:
        raise ValueError(
            f"text token id {max(ids)} is outside the talker's text_vocab_size {text_vocab_size}"
        )
