"""ROUGE for any script (imported by the tasks that generate, when they score).

``rouge_score``'s default tokenizer keeps only ``[a-z0-9]``: a Russian, Greek or Chinese target scores 0 against
itself, so a ROUGE objective would be 0 for every trial whatever the model generates. ``UnicodeTokenizer``
keeps every letter and digit of any script (Unicode word characters without ``_``), lowercased, with the Porter
stemmer on ASCII words longer than 3 letters as rouge_score's own: on English text it gives rouge_score's tokens
exactly. Scripts written without spaces (Chinese, Japanese, Thai...) are read one character a token, as
character-level ROUGE is reported for them.
"""

from __future__ import annotations

import re

from nltk.stem import porter  # rouge_score's own stemmer (a dependency of rouge_score)
from rouge_score import rouge_scorer, tokenizers

# scripts written without spaces (Han, Hiragana, Katakana, Thai, Lao, Khmer, Myanmar): one character, one token
_UNSPACED = "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_WORD = re.compile(rf"[{_UNSPACED}]|[^\W_{_UNSPACED}]+")


class UnicodeTokenizer(tokenizers.Tokenizer):
    """Words of any script for ROUGE (see the module docstring)."""

    def __init__(self, use_stemmer: bool = False):
        self.stemmer = porter.PorterStemmer() if use_stemmer else None

    def tokenize(self, text: str) -> list[str]:
        words = _WORD.findall(text.lower())
        if self.stemmer is None:
            return words
        return [self.stemmer.stem(w) if len(w) > 3 and w.isascii() else w for w in words]


def scorer(keys: list[str], use_stemmer: bool = False) -> rouge_scorer.RougeScorer:
    """rouge_score's scorer for ``keys`` (``rouge1``, ``rougeL``, ``rougeLsum``...) with ``UnicodeTokenizer``."""
    return rouge_scorer.RougeScorer(keys, tokenizer=UnicodeTokenizer(use_stemmer))
