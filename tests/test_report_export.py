"""Report files from a stored study; exported PEFT configs reproduce the allocation exactly."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
from conftest import study_dict, write_study
from peft import AutoPeftModelForSequenceClassification, LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer

from adalora_search.app.session import run_session
from adalora_search.errors import UserError
from adalora_search.results.export import export_trial
from adalora_search.results.report import write_report
from adalora_search.search.runner import prepare_data
from adalora_search.study.loader import load_spec
from adalora_search.tasks.sequence_classification import SequenceClassification
from adalora_search.train.data import batches
from adalora_search.train.modeling import build_base


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[optuna.Study, Path]:
    tmp = tmp_path_factory.mktemp("study")
    data = study_dict(
        study={"n_trials": 3, "keep_top_k_adapters": 1, "sampler": {"type": "random", "seed": 1}},
        training={"learning_rate": {"low": 1e-3, "high": 2e-2, "log": True}},
        adalora={"target_modules": ["query", "key", "value", "dense"], "init_r": 6, "target_r": 2},
        baselines=[{"name": "defaults", "params": {"training.learning_rate": 1e-3}}],
    )
    path = write_study(tmp, data)
    run_session(str(path), None, None, None, 1, [])
    return optuna.load_study(study_name="t", storage=f"sqlite:///{tmp / 'study.db'}"), path


def test_report_writes_tables_markdown_html_and_pngs(study, tmp_path: Path) -> None:
    page = write_report(study[0], tmp_path / "report")
    files = {p.name for p in (tmp_path / "report").iterdir()}
    assert {
        "trials.csv",
        "allocations.csv",
        "allocation_best.csv",
        "allocation_topk_share.csv",
        "report.md",
        "report.html",
        "heatmap_best.png",
        "heatmap_topk.png",
        "budget_curves.png",
        "pareto.png",
        "history.png",
        "intermediate.png",
    } <= files
    html = page.read_text()
    assert html.count("data:image/png;base64,") >= 6 and "Best trial" in html
    trials = pd.read_csv(tmp_path / "report" / "trials.csv")
    assert (trials["baseline"] == "defaults").sum() == 1  # the baseline row is marked
    alloc = pd.read_csv(tmp_path / "report" / "allocations.csv")
    assert set(alloc["module_type"]) >= {"query", "key", "value", "attn_out", "ffn_in", "ffn_out"}
    assert set(alloc["layer"]) >= {0, 1}


def _stored_study() -> optuna.Study:
    """Two completed trials (one a baseline with markup in its name) and a failed one, written as trials write."""
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    study = optuna.create_study(study_name="s<i>1</i>", direction="maximize")
    study.set_user_attr("objectives", [{"metric": "accuracy", "direction": "maximize"}])
    for lr, accuracy, ranks, baseline in ((1e-3, 0.61234, (3, 1), "<script>x</script>"), (5e-3, 0.81234, (4, 0), None)):
        attrs = {
            "metrics": {"final": {"accuracy": accuracy}, "test": {"accuracy": accuracy - 0.01}},
            "rank_allocation": {
                "encoder.layer.0.attention.self.query": ranks[0],
                "encoder.layer.1.attention.self.value": ranks[1],
            },
            "budget_curve": [[0, 8], [6, sum(ranks)]],
            "trainable_params": {"initial": 900, "final": 400, "model_total": 10000},
            **({"baseline": baseline} if baseline else {}),
        }
        study.add_trial(
            create_trial(
                value=accuracy,
                params={"training.learning_rate": lr},
                user_attrs=attrs,
                distributions={"training.learning_rate": FloatDistribution(1e-4, 1e-2)},
                intermediate_values={2: accuracy - 0.1, 4: accuracy},
            )
        )
    study.add_trial(
        create_trial(
            state=TrialState.FAIL, user_attrs={"failure": {"type": "TrialFailure", "message": "loss | NaN\nat step 3"}}
        )
    )
    return study


def test_report_page_and_markdown_hold_the_tables(tmp_path: Path) -> None:
    """Issue #16 item 3: the page is the packaged Jinja2 template (escaped); Markdown tables keep their columns."""
    from importlib.resources import files

    assert files("adalora_search.results").joinpath("templates/report.html").is_file()
    page = write_report(_stored_study(), tmp_path).read_text()
    assert "<title>s&lt;i&gt;1&lt;/i&gt;</title>" in page and "<script>" not in page
    assert "Gain over baseline &#39;&lt;script&gt;x&lt;/script&gt;&#39; (trial 0): +20.00 pt test accuracy" in page
    for name in ("trials", "allocation_best", "allocation_topk_share"):
        assert f"<h2>{name}</h2>" in page
    trials_html = page.split("<h2>trials</h2>")[1].split("</table>")[0]
    assert "<td>0.8123</td>" in trials_html and "<td>COMPLETE</td>" in trials_html and "<td>FAIL</td>" in trials_html
    assert "&lt;script&gt;x&lt;/script&gt;" in trials_html and "loss | NaN" in trials_html
    assert page.count("data:image/png;base64,") >= 5
    markdown = (tmp_path / "report.md").read_text()
    rows = markdown.split("## trials\n\n")[1].split("\n\n")[0].splitlines()
    widths = {len(row.replace("\\|", "").split("|")) for row in rows}
    assert len(rows) == 5 and len(widths) == 1  # header, rule, three trials; the failure's '|' escaped
    assert "loss \\| NaN at step 3" in rows[4] and "0.8123" in rows[3]
    best = markdown.split("## allocation_best\n\n")[1].splitlines()
    assert best[0].split("|")[1].strip() == "layer" and "query" in best[0] and "value" in best[0]


def test_exported_lora_config_rebuilds_the_allocation_exactly(study, tmp_path: Path) -> None:
    st, path = study
    out = export_trial(st, tmp_path / "export")
    rank_config = json.loads((out / "rank_config.json").read_text())
    config = LoraConfig.from_pretrained(str(out / "lora"))
    spec = load_spec(path)
    base = build_base(spec.model, [str(i) for i in range(5)], 0)
    model = get_peft_model(base, config)
    ranks = {
        name.removeprefix("base_model.model."): m.r["default"]
        for name, m in model.named_modules()
        if isinstance(m, LoraLayer)
    }
    expected = {k: v for k, v in rank_config["rank_allocation"].items() if v > 0}
    assert ranks == expected
    init_r, alpha = rank_config["init_r"], rank_config["lora_alpha"]
    for _name, m in model.named_modules():
        if isinstance(m, LoraLayer):
            assert m.scaling["default"] == pytest.approx(alpha / init_r)  # AdaLoRA's per-triplet scale


def test_kept_adapter_loads_and_reproduces_the_recorded_metric(study, tmp_path: Path) -> None:
    st, path = study
    out = export_trial(st, tmp_path / "export")
    best = st.best_trial
    spec = load_spec(path)
    data = prepare_data(spec)
    base = build_base(spec.model, data.label_names, spec.training.seed)
    model = PeftModel.from_pretrained(base, str(out / "adapter")).eval()
    preds, labels, loss = [], [], 0.0
    with torch.no_grad():
        for batch in batches(data.splits["validation"], 64, data.pad_token_id, None):
            labels.append(batch.pop("labels"))
            logits = model(**batch).logits
            loss += float(torch.nn.functional.cross_entropy(logits, labels[-1], reduction="sum"))
            preds.append(logits.argmax(-1))
    scores = SequenceClassification().scores(torch.cat(preds).numpy(), torch.cat(labels).numpy())
    recorded = best.user_attrs["metrics"]["final"]
    assert scores["accuracy"] == pytest.approx(recorded["accuracy"])
    # the loss is continuous: it only matches if every adapter weight and the head came back
    assert loss / len(data.splits["validation"]) == pytest.approx(recorded["eval_loss"], rel=1e-5)
    # init: random with config_overrides: the export's base/ holds that model, so PEFT alone rebuilds it
    auto = AutoPeftModelForSequenceClassification.from_pretrained(str(out / "adapter"))
    batch = next(batches(data.splits["validation"], 64, data.pad_token_id, None))
    batch.pop("labels")
    with torch.no_grad():
        torch.testing.assert_close(auto(**batch).logits, model(**batch).logits)


def test_export_refuses_to_overwrite_and_is_replaced_with_force(study, tmp_path: Path) -> None:
    st, _ = study
    out = export_trial(st, tmp_path / "export")
    marker = out / "rank_config.json"
    before = marker.read_text()
    with pytest.raises(UserError, match="--force"):
        export_trial(st, out)
    assert marker.read_text() == before
    export_trial(st, out, number=0, force=True)
    assert json.loads(marker.read_text())["trial"] == 0


def test_export_to_unwritable_place_is_a_clear_error(study) -> None:
    # /proc refuses new directories to every user, root included (a chmod'ed folder would not stop root)
    with pytest.raises(UserError, match="cannot write there"):
        export_trial(study[0], Path("/proc/adalora-search-export/export"))


def test_export_of_a_file_path_parent_is_a_clear_error(study, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(UserError, match="cannot write there"):
        export_trial(study[0], blocker / "export")


def test_pareto_study_export_picks_by_name(tmp_path: Path) -> None:
    data = study_dict(
        study={
            "n_trials": 3,
            "objective": [
                {"metric": "accuracy", "direction": "maximize"},
                {"metric": "trainable_params", "direction": "minimize"},
            ],
            "sampler": {"type": "nsga2", "seed": 0, "population_size": 2},
        },
        adalora={"target_r": {"choices": [1, 2, 3]}},
    )
    path = write_study(tmp_path, data)
    run_session(str(path), None, None, None, 1, [])
    st = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 'study.db'}")
    front = st.best_trials
    small = json.loads((export_trial(st, tmp_path / "p", pick="params") / "rank_config.json").read_text())
    fewest = min(t.user_attrs["trainable_params"]["final"] for t in front)
    assert small["trainable_params"]["final"] == fewest
    best = json.loads((export_trial(st, tmp_path / "m", pick="metric") / "rank_config.json").read_text())
    assert best["values"][0] == max(t.values[0] for t in front)
