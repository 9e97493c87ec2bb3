"""adalora-search: declarative AutoML for AdaLoRA fine-tuning (Optuna + PEFT)."""

import warnings as _warnings

import datasets as _datasets
import optuna as _optuna

_datasets.disable_progress_bars()
# heartbeats, retry callbacks and some pruners are "experimental" in Optuna's terms; we rely on them
_warnings.filterwarnings("ignore", category=_optuna.exceptions.ExperimentalWarning)

__version__ = "0.1.0"
