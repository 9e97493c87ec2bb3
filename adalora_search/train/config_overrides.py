"""``model.config_overrides`` checked against the model's own config before anything is built.

transformers stores any keyword as a config attribute: a misspelt field (``num_hidden_layer``) is silently ignored,
and a value of the wrong type or out of range (``intermediate_size: -1``) ends in a PyTorch traceback in every
trial. Each override is compared with the field of the model's config it replaces: it must exist, have that
field's type (a whole number for an int, a number for a float, true/false for a bool, text for a string), be a
positive whole number where the config holds a size or a count, and a probability where it holds a dropout.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from adalora_search.errors import Problem

PASSED_THROUGH = frozenset({"attn_implementation", "dtype", "torch_dtype"})  # read by from_pretrained itself
_COUNT = re.compile(r"(^|_)(size|sizes|layers|heads|positions|dim|labels|experts)$|^(num|n)_|^vocab_size$")
_PROBABILITY = re.compile(r"(dropout|_prob|_pdrop)")


def override_problems(config: Any, overrides: dict[str, Any]) -> list[Problem]:
    """Every override that ``config`` (the model's config without overrides) cannot take, with the fix."""
    fields = config.to_dict()
    aliases = dict(getattr(config, "attribute_map", {}) or {})  # num_hidden_layers -> GPT-2's n_layer
    problems = []
    for key, value in overrides.items():
        where = f"model.config_overrides.{key}"
        if key in PASSED_THROUGH:  # from_pretrained's own options, not config fields
            continue
        target = aliases.get(key, key)
        if target not in fields and not hasattr(config, key):
            near = difflib.get_close_matches(key, [*aliases, *fields], n=3)
            hint = f"did you mean {' or '.join(near)}?" if near else "check the name in the model's config.json"
            problems.append(Problem(where, value, f"{type(config).__name__} has no field {key!r}; {hint}"))
            continue
        if (why := _value_problem(key, fields.get(target), value)) is not None:
            problems.append(Problem(where, value, why))
    return problems


def _value_problem(key: str, current: Any, value: Any) -> str | None:
    """Why ``value`` cannot replace ``current`` (the config's own value of ``key``), else None."""
    if current is None or isinstance(current, (dict, list)):
        return None  # no type to compare with (optional fields, nested settings)
    if isinstance(current, bool):
        return None if isinstance(value, bool) else f"must be true or false (the config has {current!r})"
    if isinstance(current, int):
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be a whole number (the config has {current!r})"
        if _COUNT.search(key) and current > 0 and value < 1:
            return f"must be a positive whole number: it is a size or a count (the config has {current})"
        return None
    if isinstance(current, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a number (the config has {current!r})"
        if _PROBABILITY.search(key) and not 0.0 <= value <= 1.0:
            return f"must be a probability between 0 and 1 (the config has {current})"
        return None
    if isinstance(current, str) and not isinstance(value, str):
        return f"must be text (the config has {current!r})"
    return None
