"""A column of free text (reviews, messages, titles) as a classifier's whole input: its UTF-8 bytes.

Each text becomes `length` token ids: byte b is token b + 1, and token 0 pads a shorter text; a longer one
is cut to its first `length` bytes. An RNN or a Transformer embeds the tokens and reads them in order,
padding left out (models.py). Byte-level, as the language model (lm.py): no vocabulary to fit, store or
miss, any language or script. Training, evaluation and the endpoint all encode with `encode`, at the
model's length (its input shape), so a text is the same tokens in all three; `decode` gives a test row's
text back, for `orchestrator run`'s smoke request. Several columns of text (a title and a body) are one
text, `join`ed with a separator byte between them, so the model reads where one ends and the next begins.
"""

from __future__ import annotations

import numpy as np

PAD = 0
VOCAB_SIZE = 257  # the 256 byte values and the padding
SEPARATOR = "\x1f"  # ASCII's unit separator, between the texts of several columns: no text writes it


def join(parts) -> str:
    """One text of several columns' texts (str, or None for a blank cell), in the columns' order."""
    return SEPARATOR.join(part or "" for part in parts)


def encode(values, length: int) -> np.ndarray:
    """int64 [N, length] token ids of N texts (str)."""
    out = np.zeros((len(values), length), np.int64)
    for row, text in enumerate(values):
        raw = text.encode(errors="replace")[:length]  # a lone surrogate (JSON lets one through) becomes "?"
        out[row, : len(raw)] = np.frombuffer(raw, np.uint8).astype(np.int64) + 1
    return out


def decode(tokens) -> str:
    """The text of one row of token ids, as far as it was kept: a character cut at the end is left out."""
    kept = np.asarray(tokens)
    return bytes((kept[kept != PAD] - 1).astype(np.uint8)).decode(errors="ignore")
