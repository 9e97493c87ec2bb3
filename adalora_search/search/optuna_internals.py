"""Every use of Optuna's private API, in one module: an Optuna upgrade that changes them breaks here only.

- ``Study._storage`` and ``Trial._trial_id``: a running trial's heartbeat is written to the storage
  by our own thread (``storage.Heartbeat``; Optuna's writes one only inside ``optimize``), and
  ``optuna.artifacts.get_all_artifact_meta`` needs the storage of a ``FrozenTrial``;
- ``GridSampler._all_grids`` and ``_same_search_space``: the grid sampler for ask/tell knows when
  every grid point has started (Optuna's stops the study from inside ``optimize`` instead).

``tests/test_units.py`` fails when a private attribute of Optuna is used anywhere else.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage object behind ``study`` (Optuna's cache wrapper around an ``RDBStorage``)."""
    return study._storage


def trial_id(trial: optuna.Trial) -> int:
    """The storage's id of a running trial (not its ``number``)."""
    return trial._trial_id


class AskTellGridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler for ask/tell: it never calls ``study.stop()`` (legal only inside
    ``optimize``); the runner stops claiming once every grid point has started (``all_started``).
    """

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        """No ``study.stop()``: the worker loop asks ``all_started`` before each claim instead."""

    def all_started(self, study: optuna.Study) -> bool:
        """Every point of this grid has a finished or running trial."""
        started = {
            t.system_attrs["grid_id"]
            for t in study.get_trials(deepcopy=False)
            if "grid_id" in t.system_attrs
            and self._same_search_space(t.system_attrs["search_space"])
            and (t.state.is_finished() or t.state == TrialState.RUNNING)
        }
        return len(started) >= len(self._all_grids)
