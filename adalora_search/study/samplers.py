"""Closed sets of Optuna samplers and trial pruners, as discriminated unions (no import paths)."""

from __future__ import annotations

from typing import Annotated, Literal, Union

import optuna
from pydantic import ConfigDict, Field, RootModel

from adalora_search.study.frozen import Frozen

Seed = Annotated[int | None, Field(description="seed of the sampler's random numbers (null: other points each run)")]
StartupTrials = Annotated[int, Field(ge=0, description="trials sampled at random before the space is modelled")]


# ---------------------------------------------------------------- samplers
class TPE(Frozen):
    """Optuna's TPESampler (constant_liar on, so parallel workers spread apart)."""

    type: Literal["tpe"] = Field(default="tpe", description="tpe: Optuna's TPESampler (Bayesian, tree-structured)")
    seed: Seed = None
    n_startup_trials: StartupTrials = 10
    multivariate: bool = Field(default=False, description="model the knobs jointly rather than one by one")
    constant_liar: bool = Field(default=True, description="spread parallel workers apart")

    def build(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.TPESampler(
            seed=self.seed,
            n_startup_trials=self.n_startup_trials,
            multivariate=self.multivariate,
            constant_liar=self.constant_liar,
        )


class Random(Frozen):
    """Optuna's RandomSampler."""

    type: Literal["random"] = Field(default="random", description="random: independent uniform samples")
    seed: Seed = None

    def build(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=self.seed)


class GP(Frozen):
    """Optuna's GPSampler (Gaussian-process Bayesian optimisation)."""

    type: Literal["gp"] = Field(default="gp", description="gp: Gaussian-process Bayesian optimisation")
    seed: Seed = None
    n_startup_trials: StartupTrials = 10

    def build(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.GPSampler(seed=self.seed, n_startup_trials=self.n_startup_trials)


class NSGA2(Frozen):
    """Optuna's NSGAIISampler (multi-objective)."""

    type: Literal["nsga2"] = Field(default="nsga2", description="nsga2: genetic algorithm for several objectives")
    seed: Seed = None
    population_size: int = Field(default=50, ge=2, description="trials per generation")

    def build(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.NSGAIISampler(seed=self.seed, population_size=self.population_size)


class QMC(Frozen):
    """Optuna's QMCSampler (Sobol or Halton points)."""

    type: Literal["qmc"] = Field(default="qmc", description="qmc: quasi-Monte Carlo points that cover the space evenly")
    seed: Seed = None
    qmc_type: Literal["sobol", "halton"] = Field(default="sobol", description="the low-discrepancy sequence")
    scramble: bool = Field(default=True, description="scramble the sequence (with the seed)")

    def build(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.QMCSampler(seed=self.seed, qmc_type=self.qmc_type, scramble=self.scramble)


class Grid(Frozen):
    """Every knob must be fixed or ``choices``; the grid is their product."""

    type: Literal["grid"] = Field(default="grid", description="grid: every combination of the knobs' choices")
    seed: Seed = None

    def build(self) -> optuna.samplers.BaseSampler:  # pragma: no cover - runner builds the grid
        raise RuntimeError("the grid sampler is built from the search space by space.grid_sampler")


class SamplerSpec(RootModel[Annotated[Union[TPE, Random, GP, NSGA2, QMC, Grid], Field(discriminator="type")]]):
    """``study.sampler``: one of the samplers above, chosen by ``type``."""

    model_config = ConfigDict(frozen=True)

    @classmethod
    def default(cls) -> SamplerSpec:
        return cls(TPE())


def random_search_note(sampler: SamplerSpec, n_trials: int | None, n_enqueued: int = 0) -> str | None:
    """What to say when a model-based sampler (TPE, GP) never gets past its random start-up trials: with
    ``n_trials`` finished trials, ``n_enqueued`` of them fixed (baselines, a warm start), the study is random search.
    """
    root = sampler.root
    startup = getattr(root, "n_startup_trials", None)
    if startup is None or n_trials is None or n_trials - n_enqueued > startup or n_trials <= n_enqueued:
        return None  # (every trial fixed by baselines or a warm start: nothing is sampled at all)
    return (
        f"n_trials {n_trials} leaves {max(n_trials - n_enqueued, 0)} sampled trials, no more than {root.type}'s "
        f"{startup} random start-up trials: this study is random search; set study.sampler.n_startup_trials below "
        f"{max(n_trials - n_enqueued, 1)} or raise n_trials to model the space"
    )


# ---------------------------------------------------------------- trial pruners
class Median(Frozen):
    """Optuna's MedianPruner: stop a trial below the median of earlier trials at the same step."""

    type: Literal["median"] = Field(default="median", description="median: below the median of earlier trials")
    n_startup_trials: int = Field(default=5, ge=0, description="trials that finish before any trial is pruned")
    n_warmup_steps: int = Field(default=0, ge=0, description="optimizer steps of a trial before it can be pruned")
    interval_steps: int = Field(default=1, ge=1, description="optimizer steps between pruning checks")

    def build(self) -> optuna.pruners.BasePruner:
        return optuna.pruners.MedianPruner(self.n_startup_trials, self.n_warmup_steps, self.interval_steps)


class Percentile(Median):
    """Optuna's PercentilePruner."""

    type: Literal["percentile"] = Field(  # type: ignore[assignment]
        default="percentile", description="percentile: in the worst percentile of earlier trials"
    )
    percentile: float = Field(default=25.0, gt=0, lt=100, description="the percentile (%) a trial must beat")

    def build(self) -> optuna.pruners.BasePruner:
        return optuna.pruners.PercentilePruner(
            self.percentile, self.n_startup_trials, self.n_warmup_steps, self.interval_steps
        )


class SuccessiveHalving(Frozen):
    """Optuna's SuccessiveHalvingPruner (rungs over optimizer steps)."""

    type: Literal["successive_halving"] = Field(
        default="successive_halving", description="successive_halving: keep the best 1/reduction_factor at each rung"
    )
    min_resource: int | Literal["auto"] = Field(
        default="auto", description="optimizer steps of the first rung (auto: from the first finished trial)"
    )
    reduction_factor: int = Field(default=4, ge=2, description="1/reduction_factor of the trials go on at a rung")
    min_early_stopping_rate: int = Field(default=0, ge=0, description="rungs skipped (higher: prune later)")

    def build(self) -> optuna.pruners.BasePruner:
        return optuna.pruners.SuccessiveHalvingPruner(
            self.min_resource, self.reduction_factor, self.min_early_stopping_rate
        )


class Hyperband(Frozen):
    """Optuna's HyperbandPruner."""

    type: Literal["hyperband"] = Field(default="hyperband", description="hyperband: successive halving brackets")
    min_resource: int = Field(default=1, ge=1, description="optimizer steps of the smallest rung")
    max_resource: int | Literal["auto"] = Field(
        default="auto", description="optimizer steps of a whole trial (auto: from the first finished trial)"
    )
    reduction_factor: int = Field(default=3, ge=2, description="1/reduction_factor of the trials go on at a rung")

    def build(self) -> optuna.pruners.BasePruner:
        return optuna.pruners.HyperbandPruner(self.min_resource, self.max_resource, self.reduction_factor)


class Wilcoxon(Frozen):
    """Optuna's WilcoxonPruner."""

    type: Literal["wilcoxon"] = Field(default="wilcoxon", description="wilcoxon: a signed-rank test against the best")
    p_threshold: float = Field(default=0.1, gt=0, lt=1, description="prune when the test's p-value is below this")
    n_startup_steps: int = Field(default=2, ge=0, description="evaluations of a trial before it can be pruned")

    def build(self) -> optuna.pruners.BasePruner:
        return optuna.pruners.WilcoxonPruner(p_threshold=self.p_threshold, n_startup_steps=self.n_startup_steps)


class NoPruner(Frozen):
    """No trial pruning (required with several objectives)."""

    type: Literal["none"] = Field(default="none", description="none: every trial runs to its end")

    def build(self) -> optuna.pruners.BasePruner:
        return optuna.pruners.NopPruner()


_Inner = Union[Median, Percentile, SuccessiveHalving, Hyperband, Wilcoxon, NoPruner]


class Patient(Frozen):
    """Wraps another pruner and waits ``patience`` evaluations without improvement."""

    type: Literal["patient"] = Field(default="patient", description="patient: another pruner, after some patience")
    patience: int = Field(default=2, ge=0, description="evaluations without improvement before pruning can happen")
    min_delta: float = Field(default=0.0, ge=0, description="the least change of the metric that is an improvement")
    wrapped: Annotated[_Inner, Field(discriminator="type")] = Field(
        default=Median(), description="the pruner that decides once patience runs out (default: median)"
    )

    def build(self) -> optuna.pruners.BasePruner:
        return optuna.pruners.PatientPruner(self.wrapped.build(), self.patience, self.min_delta)


class PrunerSpec(RootModel[Annotated[Union[_Inner, Patient], Field(discriminator="type")]]):
    """``study.pruner``: one of the trial pruners above, chosen by ``type``."""

    model_config = ConfigDict(frozen=True)

    @classmethod
    def default(cls) -> PrunerSpec:
        """No trial pruning: chosen by bench/search_benchmark.py (BENCHMARKS.md §3), where every trial pruner
        tried (median, successive halving, Hyperband, on accuracy or eval_loss) found worse configurations
        than letting trials finish, at equal optimizer steps too.
        """
        return cls(NoPruner())
