"""A column of free text (reviews, messages, titles) as a classifier's whole input: its UTF-8 bytes.

Each text becomes `length` token ids: byte b is token b + 1, and token 0 pads a shorter text; a longer one
is cut to its first `length` bytes. An RNN or a Transformer embeds the tokens and reads them in order,
padding left out (models.py). Byte-level, as the language model (lm.py): no vocabulary to fit, store or
miss, any language or script. Training, evaluation and the endpoint all encode with `encode`, at the
model's length (its input shape), so a text is the same tokens in all three.
"""

from __future__ import annotations

import numpy as np

PAD = 0
VOCAB_SIZE = 257  # the 256 byte values and the padding


def encode(values, length: int) -> np.ndarray:
    """int64 [N, length] token ids of N texts (str)."""
    out = np.zeros((len(values), length), np.int64)
    for row, text in enumerate(values):
        raw = text.encode(errors="replace")[:length]  # a lone surrogate (JSON lets one through) becomes "?"
        out[row, : len(raw)] = np.frombuffer(raw, np.uint8).astype(np.int64) + 1
    return out
