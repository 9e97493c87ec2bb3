"""Sequence classification (``model.task: classification``) and regression (``regression``).

Rows: one or two text fields (a sentence pair) and a label. ``input_ids``: [n_tokens] per row
(two fields joined by the tokenizer, with ``token_type_ids``); ``labels``: a class id (int) or,
for regression, a float. Metrics come from scikit-learn and SciPy.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING, Any, ClassVar

from adalora_search.errors import DataRowError, Problem, UserError
from adalora_search.tasks.base import (
    Direction,
    Encoded,
    EvalContext,
    Rows,
    Task,
    id_names,
    label_config,
    named,
    used_fields,
)

if TYPE_CHECKING:
    import numpy as np
    import torch

    from adalora_search.train.data import Split

CHANCE_MARGIN = 0.02  # accuracy this close above 1/classes still reads as chance


class SequenceClassification(Task):
    """One label per text (or text pair)."""

    name = "classification"
    auto_class = "AutoModelForSequenceClassification"
    peft_task_type = "SEQ_CLS"
    metrics: ClassVar[dict[str, Direction]] = {
        "accuracy": "maximize",
        "f1_macro": "maximize",
        "mcc": "maximize",
        "eval_loss": "minimize",
    }
    main_metric = "accuracy"
    invariants = ("the model's pad id is the batches' (a row's logits do not depend on its batch)",)
    per_example = ("accuracy",)
    data_fields = frozenset({"text_fields", "label_field", "label_names", "drop_blank_labels"})
    stratify = True

    def check_data(self, data: Any) -> list[Problem]:
        problems = used_fields(data, {"text_fields", "label_field", "label_names", "drop_blank_labels"}, self.name)
        if not data.text_fields:
            problems.append(
                Problem(
                    "data.text_fields",
                    None,
                    f"model.task {self.name} needs one text field, "
                    "or two for sentence pairs, e.g. text_fields: [sentence]",
                )
            )
        return problems

    def columns(self, data: Any) -> list[tuple[str, str]]:
        return [*(("text_fields", f) for f in data.text_fields), ("label_field", data.label_field)]

    def select(self, rows: Rows, data: Any, split: str, features: Any = None) -> Rows:
        rows = _without_blank_labels(rows, data, split)
        out = {f: ["" if t is None else str(t) for t in rows[f]] for f in data.text_fields}
        if not any(text.strip() for texts in out.values() for text in texts):
            raise UserError(
                f"data.text_fields = {data.text_fields}: every text of the {split} split is empty "
                "(nothing left to tokenize); point text_fields at a column that holds text"
            )
        feature = features[data.label_field] if features is not None and data.label_field in features else None
        out["label"] = self._labels(rows[data.label_field], data, id_names(feature, data), split)
        return out

    def _labels(self, labels: list[Any], data: Any, names: list[str] | None, split: str) -> list[Any]:
        return [named(v, names, data, split) for v in labels]

    def label_names(self, train: Rows, data: Any, class_names: list[str] | None = None) -> list[str] | None:
        return list(data.label_names or class_names or sorted({str(v) for v in train["label"]}))

    def encode(self, rows: Rows, data: Any, tokenizer: Any, label_names: list[str] | None, split: str) -> Encoded:
        empty = [i for i in range(len(rows["label"])) if not any(rows[f][i].strip() for f in data.text_fields)]
        if empty:  # nothing to learn from: left out and counted (validate shows it)
            keep = sorted(set(range(len(rows["label"]))) - set(empty))
            rows = {column: [values[i] for i in keep] for column, values in rows.items()}
        texts = [rows[f] for f in data.text_fields]
        encoded = tokenizer(*texts, truncation=True, max_length=data.max_length)
        full = tokenizer(*texts)["input_ids"]
        out: Rows = {"input_ids": encoded["input_ids"]}
        if len(data.text_fields) == 2 and "token_type_ids" in encoded:
            out["token_type_ids"] = encoded["token_type_ids"]
        out["labels"] = self._label_ids(rows["label"], data, label_names, split)
        return Encoded(
            out, {"empty text": len(empty)} if empty else {}, sum(len(ids) > data.max_length for ids in full)
        )

    def _label_ids(self, labels: list[Any], data: Any, names: list[str] | None, split: str) -> list[Any]:
        assert names is not None
        unknown = sorted({str(v) for v in labels} - set(names))
        if unknown:
            where = "are not in data.label_names" if data.label_names else "never occur in train"
            raise UserError(
                f"data.label_field = {data.label_field!r}: the {split} split has labels {unknown[:5]} "
                f"that {where} ({names[:10]}); fix the data, the split or the names"
            )
        index = {name: i for i, name in enumerate(names)}
        return [index[str(v)] for v in labels]

    def config_kwargs(self, label_names: list[str] | None) -> dict[str, Any]:
        # problem_type as transformers infers it at the first forward: set up front, the config is not changed
        # by training (a compiled trial would otherwise recompile after its first step)
        kwargs = label_config(label_names)
        return {**kwargs, "problem_type": "single_label_classification"} if len(label_names or []) >= 2 else kwargs

    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        import torch

        preds, labels, loss, n = [], [], 0.0, 0
        for batch in ctx.batches():
            target = batch.pop("labels")
            logits = ctx.forward(batch).float().cpu()
            loss += float(self._loss(logits, target)) * len(target)
            n += len(target)
            preds.append(self._predict(logits))
            labels.append(target)
        scores = self.scores(torch.cat(preds).numpy(), torch.cat(labels).numpy())
        scores["eval_loss"] = loss / max(n, 1)
        return scores

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        import torch

        return torch.nn.functional.cross_entropy(logits, target)

    def trivial(self, splits: dict[str, Split], label_names: list[str] | None) -> dict[str, Any] | None:
        """Always the training split's majority class; the validation split's class shares beside it."""
        import numpy as np

        train = splits["train"].columns["labels"]
        if not train or not label_names:
            return None
        majority = Counter(train).most_common(1)[0][0]
        out: dict[str, Any] = {"label": f"always {label_names[majority]!r}"}
        for name in ("validation", "test"):
            if name in splits and len(splits[name]):
                labels = np.asarray(splits[name].columns["labels"])
                out[name] = _constant_scores(majority, labels)
        counts = Counter(splits["validation"].columns["labels"])
        out["shares"] = {label_names[c]: n / len(splits["validation"]) for c, n in counts.most_common()}
        return out

    def _predict(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(-1)

    def chance_note(self, scores: dict[str, float], split: Split, label_names: list[str] | None) -> str | None:
        """Which way the scores say the run learned nothing: one class predicted for every row, accuracy equal
        to the majority class's share, or within ``CHANCE_MARGIN`` of 1/classes.
        """
        accuracy = scores.get("accuracy")
        if accuracy is None or not label_names or not len(split):
            return None
        counts = Counter(split.columns["labels"])
        majority = max(counts.values()) / len(split)
        uniform = 1 / len(label_names)
        if scores.get("predicted_classes") == 1:
            shares = {label_names[c]: n / len(split) for c, n in counts.items()}
            named = [name for name, share in shares.items() if math.isclose(share, accuracy, abs_tol=1e-9)]
            which = f"{named[0]!r}, whose share of the validation split is {accuracy:.4f}" if named else "one class"
            largest = max(shares, key=shares.get)
            return (
                f"predicts a single class for every validation example ({which}; MCC 0): the model ignores its "
                f"input. A learning rate that diverged (try a lower one), or one too low to move in this many steps "
                f"(a higher one, or more steps), or classes so unbalanced that one answer pays (the largest, "
                f"{largest!r}, is {shares[largest]:.0%} of the split) are the usual causes"
            )
        if math.isclose(accuracy, majority, abs_tol=1e-9):
            name = label_names[max(counts, key=counts.get)]
            return (
                f"validation accuracy {accuracy:.4f} equals the majority class's share ({name!r}, "
                f"{majority:.4f}): no better than always answering that class"
            )
        if accuracy <= uniform + CHANCE_MARGIN:
            return (
                f"validation accuracy {accuracy:.4f} is at chance level (1/{len(label_names)} classes = "
                f"{uniform:.4f}): the run learned nothing"
            )
        return None

    def scores(self, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """accuracy, macro-F1 and MCC of class ids [n] against class ids [n] (scikit-learn), and how many
        distinct classes were predicted (1: the model ignores its input, whatever the accuracy).
        """
        from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

        return {
            "accuracy": float(accuracy_score(labels, predictions)),
            "f1_macro": float(f1_score(labels, predictions, average="macro", zero_division=0)),
            "mcc": float(matthews_corrcoef(labels, predictions)),
            "predicted_classes": len(set(predictions.tolist())),
        }


class Regression(SequenceClassification):
    """One score per text (or text pair); MSE loss, correlation metrics."""

    name = "regression"
    metrics: ClassVar[dict[str, Direction]] = {"pearson": "maximize", "spearman": "maximize", "eval_loss": "minimize"}
    main_metric = "pearson"
    per_example = ()
    stratify = False

    def check_data(self, data: Any) -> list[Problem]:
        problems = super().check_data(data)
        if data.label_names is not None:
            problems.append(
                Problem(
                    "data.label_names",
                    data.label_names,
                    "regression labels are scores, not classes; remove data.label_names",
                )
            )
        return problems

    def _labels(self, labels: list[Any], data: Any, names: list[str] | None, split: str) -> list[Any]:
        try:
            return [float(v) for v in labels]
        except (TypeError, ValueError):
            raise UserError(
                f"data.label_field = {data.label_field!r}: model.task is regression but labels "
                f"are not numbers (e.g. {labels[0]!r}); use task: classification"
            ) from None

    def label_names(self, train: Rows, data: Any, class_names: list[str] | None = None) -> list[str] | None:
        return None

    def _label_ids(self, labels: list[Any], data: Any, names: list[str] | None, split: str) -> list[Any]:
        return [float(v) for v in labels]

    def config_kwargs(self, label_names: list[str] | None) -> dict[str, Any]:
        return {"num_labels": 1, "problem_type": "regression"}

    def trivial(self, splits: dict[str, Split], label_names: list[str] | None) -> dict[str, Any] | None:
        """Always the training split's mean score (Pearson 0; its MSE as eval_loss)."""
        import numpy as np

        train = np.asarray(splits["train"].columns["labels"], dtype=float)
        if not len(train):
            return None
        mean = float(train.mean())
        out: dict[str, Any] = {"label": f"always the training mean {mean:.3g}"}
        for name in ("validation", "test"):
            if name in splits and len(splits[name]):
                labels = np.asarray(splits[name].columns["labels"], dtype=float)
                out[name] = {"pearson": 0.0, "spearman": 0.0, "eval_loss": float(np.mean((labels - mean) ** 2))}
        return out

    def chance_note(self, scores: dict[str, float], split: Split, label_names: list[str] | None) -> str | None:
        """The trivial predictor of a score is a constant: the run learned nothing when its Pearson correlation is
        at most ``CHANCE_MARGIN`` or its MSE (``eval_loss``) is no lower than predicting the validation labels' own
        mean (their variance; the training mean does worse still).
        """
        import numpy as np

        pearson, mse = scores.get("pearson"), scores.get("eval_loss")
        if pearson is None or len(split) < 2:
            return None
        constant = float(np.var(np.asarray(split.columns["labels"], dtype=float)))
        if pearson <= CHANCE_MARGIN:
            return (
                f"validation Pearson {pearson:.3f}: no better than a constant prediction (Pearson 0; the labels' "
                f"mean scores MSE {constant:.4f}); the run learned nothing"
            )
        if mse is not None and mse >= constant:
            return (
                f"validation MSE {mse:.4f} is no better than a constant prediction's (the labels' mean: MSE "
                f"{constant:.4f}), though Pearson is {pearson:.3f}: the scores are off in scale or offset"
            )
        return None

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        import torch

        return torch.nn.functional.mse_loss(logits.squeeze(-1), target)

    def _predict(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.squeeze(-1)

    def scores(self, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """Pearson and Spearman correlation (SciPy); a constant prediction scores 0 (never NaN)."""
        import numpy as np
        from scipy import stats

        if np.std(predictions) == 0 or np.std(labels) == 0:
            return {"pearson": 0.0, "spearman": 0.0}
        return {
            "pearson": _finite(stats.pearsonr(predictions, labels)[0]),
            "spearman": _finite(stats.spearmanr(predictions, labels)[0]),
        }


def _without_blank_labels(rows: Rows, data: Any, split: str) -> Rows:
    """Rows whose label cell is empty are refused, or dropped with ``data.drop_blank_labels``."""
    labels = rows[data.label_field]
    blank = [i for i, v in enumerate(labels) if v is None or (isinstance(v, str) and not v.strip())]
    if not blank:
        return rows
    if not data.drop_blank_labels:
        raise DataRowError(
            blank[0],
            f"data.label_field = {data.label_field!r}: {len(blank)} row(s) of the {split} "
            "split have a blank label (the first: {row}); fill them, or set data.drop_blank_labels: "
            "true",
            split,
        )
    keep = sorted(set(range(len(labels))) - set(blank))
    return {column: [values[i] for i in keep] for column, values in rows.items()}


def _finite(value: float) -> float:
    return 0.0 if math.isnan(value) else float(value)


def _constant_scores(answer: int, labels: np.ndarray) -> dict[str, float]:
    """accuracy, macro-F1 and MCC of answering ``answer`` for every row of ``labels`` (MCC of a constant: 0)."""
    import numpy as np
    from sklearn.metrics import f1_score

    predictions = np.full_like(labels, answer)
    return {
        "accuracy": float(np.mean(labels == answer)),
        "f1_macro": float(f1_score(labels, predictions, average="macro", zero_division=0)),
        "mcc": 0.0,
    }
