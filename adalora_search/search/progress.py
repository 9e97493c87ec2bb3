"""Progress bars for a worker (tqdm): the study's finished trials with an ETA, and the running trial.

Shown on a terminal only (tqdm's ``disable=None``); log lines are printed above the bars
(``tqdm.contrib.logging.logging_redirect_tqdm``), so ``-q`` / ``-v`` and the bars go together.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import IO

import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class Progress:
    """A study bar (finished trials out of ``n_trials``) and a bar per running trial (optimizer steps).

    Args:
        study: the study; its finished trials (every worker's) set the study bar.
        n_trials: the study's total, or None (a bar without a total when only a timeout is set).
        disable: tqdm's: None shows the bars on a terminal only.
        file: where the bars go (default stderr).
    """

    def __init__(
        self, study: optuna.Study, n_trials: int | None, disable: bool | None = None, file: IO[str] | None = None
    ):
        self.study = study
        self.options = {"disable": disable, "file": file, "dynamic_ncols": True}
        self.bar = tqdm(
            total=n_trials,
            initial=self._finished(),
            unit="trial",
            desc=f"study {study.study_name}",
            position=0,
            **self.options,
        )
        self.trial_bar: tqdm | None = None

    def _finished(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=FINISHED))

    def step(self, number: int, step: int, total_steps: int) -> None:
        """The running trial ``number`` has done ``step`` of ``total_steps`` optimizer steps."""
        if self.trial_bar is None:
            self.trial_bar = tqdm(
                total=total_steps, unit="step", desc=f"trial {number}", position=1, leave=False, **self.options
            )
        self.trial_bar.update(step - self.trial_bar.n)

    def trial_done(self, best: str | None) -> None:
        """Close the trial's bar; move the study bar to the stored count of finished trials."""
        if self.trial_bar is not None:
            self.trial_bar.close()
            self.trial_bar = None
        self.bar.update(self._finished() - self.bar.n)
        if best:
            self.bar.set_postfix_str(best)

    def close(self) -> None:
        if self.trial_bar is not None:
            self.trial_bar.close()
        self.bar.close()


@contextlib.contextmanager
def bars(
    study: optuna.Study, n_trials: int | None, disable: bool | None = None, file: IO[str] | None = None
) -> Iterator[Progress]:
    """``Progress`` for the duration of a worker, with the package's log lines printed above it: through the
    package logger's own console handler (the command line's), or a new one when the program configured no logging.
    A program that configured its own (a handler on the root logger) gets each line once, through it.
    """
    progress = Progress(study, n_trials, disable, file)
    logger = logging.getLogger("adalora_search")
    own = any(isinstance(h, logging.StreamHandler) for h in logger.handlers)
    redirect = logging_redirect_tqdm(loggers=[logger]) if own or not logging.getLogger().handlers else None
    try:
        with redirect or contextlib.nullcontext():
            yield progress
    finally:
        progress.close()
