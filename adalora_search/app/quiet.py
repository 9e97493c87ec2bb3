"""Library warnings the verbs silence while they run, and only then: importing adalora_search changes no
global state, so a program that imports it keeps its own warning filters.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_warnings() -> Iterator[None]:
    """Within: Optuna's ExperimentalWarning (heartbeats, retry callbacks, some pruners are "experimental" in
    Optuna's terms, and we rely on them), its note that a fixed parameter lies outside the searched range (a
    baseline may, on purpose: e.g. PEFT's default learning rate), and transformers' FutureWarnings.
    """
    import optuna

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Fixed parameter .* is out of range")
        warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
        yield
