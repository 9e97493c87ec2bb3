"""The warm-start portfolio (``study.warm_start: portfolio``): configurations run first, in this order.

Written by ``python bench/choose_portfolio.py`` from the benchmark tables (``bench/tables/*.json.gz``): greedily,
each pick is the configuration that most lowers the mean over the tables' runs (table x training seed) of the
best normalized regret among the picks so far. Values are knob paths as in a study file; target modules are
BERT's names, matched to another model's by the kinds of matrix they name (``search/warm_start.py``); t_init
and t_final are fractions of the steps. A value outside a study's space is left to its sampler.

Provisional (2026-12-08): chosen on the first table alone, 160 of its 540 configurations built, so the picks are
variations of T1's best region; to be chosen again on T1 + T2 once they are built (BENCHMARKS.md §3a).
"""

from __future__ import annotations

from typing import Any

TABLES = ("t1_bbc_news_minilm (partial)",)  # what the picks were chosen on (bench/choose_portfolio.py)

PORTFOLIO: tuple[dict[str, Any], ...] = (
    {
        "training.learning_rate": 0.024,
        "adalora.target_modules": [
            "query",
            "key",
            "value",
            "attention.output.dense",
            "intermediate.dense",
            "output.dense",
        ],
        "adalora.init_r": 16,
        "adalora.target_r": 2,
        "adalora.lora_alpha": 8.0,
        "adalora.schedule.t_init": 0.1,
        "adalora.schedule.t_final": 0.2,
        "adalora.schedule.delta_t": 5,
        "adalora.beta1": 0.85,
        "adalora.beta2": 0.85,
        "adalora.orth_reg_weight": 0.1,
    },
    {
        "training.learning_rate": 0.024,
        "adalora.target_modules": [
            "query",
            "key",
            "value",
            "attention.output.dense",
            "intermediate.dense",
            "output.dense",
        ],
        "adalora.init_r": 12,
        "adalora.target_r": 4,
        "adalora.lora_alpha": 8.0,
        "adalora.schedule.t_init": 0.1,
        "adalora.schedule.t_final": 0.2,
        "adalora.schedule.delta_t": 5,
        "adalora.beta1": 0.85,
        "adalora.beta2": 0.85,
        "adalora.orth_reg_weight": 0.1,
    },
    {
        "training.learning_rate": 0.024,
        "adalora.target_modules": [
            "query",
            "key",
            "value",
            "attention.output.dense",
            "intermediate.dense",
            "output.dense",
        ],
        "adalora.init_r": 12,
        "adalora.target_r": 4,
        "adalora.lora_alpha": 8.0,
        "adalora.schedule.t_init": 0.1,
        "adalora.schedule.t_final": 0.1,
        "adalora.schedule.delta_t": 5,
        "adalora.beta1": 0.85,
        "adalora.beta2": 0.85,
        "adalora.orth_reg_weight": 0.1,
    },
    {
        "training.learning_rate": 0.024,
        "adalora.target_modules": [
            "query",
            "key",
            "value",
            "attention.output.dense",
            "intermediate.dense",
            "output.dense",
        ],
        "adalora.init_r": 12,
        "adalora.target_r": 8,
        "adalora.lora_alpha": 8.0,
        "adalora.schedule.t_init": 0.1,
        "adalora.schedule.t_final": 0.3,
        "adalora.schedule.delta_t": 5,
        "adalora.beta1": 0.85,
        "adalora.beta2": 0.85,
        "adalora.orth_reg_weight": 0.1,
    },
)
