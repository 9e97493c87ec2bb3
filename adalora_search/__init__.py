"""adalora-search: declarative AutoML for AdaLoRA fine-tuning (Optuna + PEFT)."""

import warnings as _warnings

import optuna as _optuna

# heartbeats, retry callbacks and some pruners are "experimental" in Optuna's terms; we rely on them
_warnings.filterwarnings("ignore", category=_optuna.exceptions.ExperimentalWarning)
# a baseline may sit outside the searched range on purpose (e.g. PEFT's default learning rate)
_warnings.filterwarnings("ignore", message="Fixed parameter .* is out of range")
_warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")

__version__ = "0.1.0"
