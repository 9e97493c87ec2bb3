"""Closed sets of Optuna samplers and trial pruners, as discriminated unions (no import paths)."""

from __future__ import annotations

from typing import Annotated, Literal, Union

import optuna
from pydantic import ConfigDict, Field, RootModel

from adalora_search.study.frozen import Frozen


# ---------------------------------------------------------------- samplers
class TPE(Frozen):
    """Optuna's TPESampler (constant_liar on, so parallel workers spread apart)."""

    type: Literal["tpe"] = "tpe"
    seed: int | None = None
    n_startup_trials: int = Field(default=10, ge=0)
    multivariate: bool = False
    constant_liar: bool = Field(default=True, description="spread parallel workers apart")

    def build(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.TPESampler(
            seed=self.seed, n_startup_trials=self.n_startup_trials,
            multivariate=self.multivariate, constant_liar=self.constant_liar,
        )


class RandomS(Frozen):
    """Optuna's RandomSampler."""

    type: Literal["random"] = "random"
    seed: int | None = None

    def build(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=self.seed)


class GP(Frozen):
    """Optuna's GPSampler (Gaussian-process Bayesian optimisation)."""

    type: Literal["gp"] = "gp"
    seed: int | None = None
    n_startup_trials: int = Field(default=10, ge=0)

    def build(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.GPSampler(seed=self.seed, n_startup_trials=self.n_startup_trials)


class NSGA2(Frozen):
    """Optuna's NSGAIISampler (multi-objective)."""

    type: Literal["nsga2"] = "nsga2"
    seed: int | None = None
    population_size: int = Field(default=50, ge=2)

    def build(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.NSGAIISampler(seed=self.seed, population_size=self.population_size)


class QMC(Frozen):
    """Optuna's QMCSampler (Sobol or Halton points)."""

    type: Literal["qmc"] = "qmc"
    seed: int | None = None
    qmc_type: Literal["sobol", "halton"] = "sobol"
    scramble: bool = True

    def build(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.QMCSampler(seed=self.seed, qmc_type=self.qmc_type, scramble=self.scramble)


class Grid(Frozen):
    """Every knob must be fixed or ``choices``; the grid is their product (built by the runner)."""

    type: Literal["grid"] = "grid"
    seed: int | None = None

    def build(self) -> optuna.samplers.BaseSampler:  # pragma: no cover - runner builds the grid
        raise RuntimeError("the grid sampler is built from the search space by space.grid_sampler")


class SamplerSpec(RootModel[Annotated[Union[TPE, RandomS, GP, NSGA2, QMC, Grid], Field(discriminator="type")]]):
    """``study.sampler``: one of the samplers above, chosen by ``type``."""

    model_config = ConfigDict(frozen=True)

    @classmethod
    def default(cls) -> SamplerSpec:
        return cls(TPE())


# ---------------------------------------------------------------- trial pruners
class Median(Frozen):
    """Optuna's MedianPruner: stop a trial below the median of earlier trials at the same step."""

    type: Literal["median"] = "median"
    n_startup_trials: int = Field(default=5, ge=0)
    n_warmup_steps: int = Field(default=0, ge=0)
    interval_steps: int = Field(default=1, ge=1)

    def build(self) -> optuna.pruners.BasePruner:
        return optuna.pruners.MedianPruner(self.n_startup_trials, self.n_warmup_steps, self.interval_steps)


class Percentile(Median):
    """Optuna's PercentilePruner."""

    type: Literal["percentile"] = "percentile"  # type: ignore[assignment]
    percentile: float = Field(default=25.0, gt=0, lt=100)

    def build(self) -> optuna.pruners.BasePruner:
        return optuna.pruners.PercentilePruner(
            self.percentile, self.n_startup_trials, self.n_warmup_steps, self.interval_steps
        )


class SuccessiveHalving(Frozen):
    """Optuna's SuccessiveHalvingPruner (rungs over optimizer steps)."""

    type: Literal["successive_halving"] = "successive_halving"
    min_resource: int | Literal["auto"] = "auto"
    reduction_factor: int = Field(default=4, ge=2)
    min_early_stopping_rate: int = Field(default=0, ge=0)

    def build(self) -> optuna.pruners.BasePruner:
        return optuna.pruners.SuccessiveHalvingPruner(
            self.min_resource, self.reduction_factor, self.min_early_stopping_rate
        )


class Hyperband(Frozen):
    """Optuna's HyperbandPruner."""

    type: Literal["hyperband"] = "hyperband"
    min_resource: int = Field(default=1, ge=1)
    max_resource: int | Literal["auto"] = "auto"
    reduction_factor: int = Field(default=3, ge=2)

    def build(self) -> optuna.pruners.BasePruner:
        return optuna.pruners.HyperbandPruner(self.min_resource, self.max_resource, self.reduction_factor)


class Wilcoxon(Frozen):
    """Optuna's WilcoxonPruner."""

    type: Literal["wilcoxon"] = "wilcoxon"
    p_threshold: float = Field(default=0.1, gt=0, lt=1)
    n_startup_steps: int = Field(default=2, ge=0)

    def build(self) -> optuna.pruners.BasePruner:
        return optuna.pruners.WilcoxonPruner(p_threshold=self.p_threshold, n_startup_steps=self.n_startup_steps)


class NoPruner(Frozen):
    """No trial pruning (required with several objectives)."""

    type: Literal["none"] = "none"

    def build(self) -> optuna.pruners.BasePruner:
        return optuna.pruners.NopPruner()


_Inner = Union[Median, Percentile, SuccessiveHalving, Hyperband, Wilcoxon, NoPruner]


class Patient(Frozen):
    """Wraps another pruner and waits ``patience`` evaluations without improvement."""

    type: Literal["patient"] = "patient"
    patience: int = Field(default=2, ge=0)
    min_delta: float = Field(default=0.0, ge=0)
    wrapped: Annotated[_Inner, Field(discriminator="type")] = Median()

    def build(self) -> optuna.pruners.BasePruner:
        return optuna.pruners.PatientPruner(self.wrapped.build(), self.patience, self.min_delta)


class PrunerSpec(RootModel[Annotated[Union[_Inner, Patient], Field(discriminator="type")]]):
    """``study.pruner``: one of the trial pruners above, chosen by ``type``."""

    model_config = ConfigDict(frozen=True)

    @classmethod
    def default(cls) -> PrunerSpec:
        return cls(Median())
