"""A character-level tokenizer for the arithmetic demo, built locally (no hub).

One token per character of ``0123456789+-*=`` and the space, plus ``<pad>`` and ``<eos>``. It is a regular
``transformers.PreTrainedTokenizerFast`` so TRL's ``GRPOTrainer`` can use it as ``processing_class``.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, EOS = "<pad>", "<eos>"
CHARS = "0123456789+-*= "


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Character-level fast tokenizer; left padding (as generation needs); ``decode`` concatenates characters."""
    vocab = {PAD: 0, EOS: 1, **{ch: i + 2 for i, ch in enumerate(CHARS)}}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=PAD))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, eos_token=EOS, padding_side="left")
    tok.model_max_length = 64
    return tok
