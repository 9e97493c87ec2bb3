"""SQuAD's answer metrics, as its official evaluation scripts define them (v1.1 and v2.0).

``normalize``: lower case, punctuation and the articles a/an/the removed, whitespace collapsed. A prediction
scores the best of its gold answers: exact match (0 or 1) and token F1. SQuAD v2.0's rule for questions without
an answer: the gold answers are then ``[""]`` and only an empty prediction scores (1, else 0). Means are 0..1
(the scripts print them x100).
"""

from __future__ import annotations

import re
import string
from collections import Counter

_PUNCTUATION = set(string.punctuation)


def normalize(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def token_f1(prediction: str, gold: str) -> float:
    """Token-overlap F1 of normalised texts; when either has no token, 1 if both have none, else 0."""
    pred, ref = normalize(prediction).split(), normalize(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: list[str], answers: list[list[str]]) -> dict[str, float]:
    """Mean ``exact_match`` and ``f1`` of predictions against each question's gold answers (0..1).

    ``answers[i]``: the gold texts of question i; none (or only blank ones) means it has no answer (v2.0).
    """
    exact = f1 = 0.0
    for prediction, gold in zip(predictions, answers):
        golds = [a for a in gold if normalize(a)] or [""]
        exact += max(float(normalize(prediction) == normalize(a)) for a in golds)
        f1 += max(token_f1(prediction, a) for a in golds)
    n = max(len(predictions), 1)
    return {"exact_match": exact / n, "f1": f1 / n}
