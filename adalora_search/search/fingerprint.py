"""What makes two trials comparable, hashed per section and stored with the study.

A study file edited after its study was created (another model, other data, longer training, a
different search space or objective) must not silently add trials to the stored study: the
fingerprint is recorded when the study is created (study user attrs ``fingerprint``, section ->
hash, and ``fingerprint_sections``, a readable copy) and compared whenever a worker loads it.
Execution details are left out, so they may change between runs: those that change results at most
as float rounding or another dropout draw would (device, threads, eval batch size, compilation —
inductor draws dropout from its own generator —, padding to a multiple) and the search's own
(sampler, pruner, n_trials, storage, baselines).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import optuna
from pydantic import BaseModel

from adalora_search.errors import UserError
from adalora_search.study.data_sources import DiskSource, FilesSource
from adalora_search.study.space import KNOBS, knob
from adalora_search.study.spec import StudySpec
from adalora_search.train import sources

_log = logging.getLogger(__name__)

_RUN_ONLY = {"device", "num_threads", "eval_batch_size", "compile"}
# training knobs (the knob table's): fingerprinted in the "space" section with the other knobs, not twice
_TRAINING_KNOBS = {path.removeprefix("training.") for path in KNOBS if path.startswith("training.")}
FIX = "use a new study.name, or pass --allow-changed-study to go on anyway"


def sections(spec: StudySpec) -> dict[str, Any]:
    """The comparable parts of a study, as JSON data (defaults left out, so new defaulted fields don't count)."""
    data = spec.data.model_dump(mode="json", exclude={"pad_to_multiple_of"}, exclude_defaults=True)
    if isinstance(spec.data.source, FilesSource):  # by file name: workers may see the files at other paths
        data["source"]["paths"] = {k: Path(v).name for k, v in spec.data.source.paths.items()}
    if isinstance(spec.data.source, DiskSource):
        data["source"]["path"] = Path(spec.data.source.path).name
    if (content := sources.content_identity(spec.data.source)) is not None:  # the files' content, not their path
        data["content"] = content
    space = {path: _dump(knob(spec, path)) for path in KNOBS}
    space["adalora.schedule.unit"] = spec.adalora.schedule.unit
    space["objectives"] = [{"metric": o.metric, "direction": o.resolved_direction} for o in spec.study.objectives]
    if spec.study.pruning_metric is not None:  # what intermediate values mean (older studies have no key)
        space["pruning_metric"] = spec.study.pruning_metric
    return {
        "model": spec.model.model_dump(mode="json", exclude={"dtype", "trust_remote_code"}, exclude_defaults=True),
        "data": data,
        "training": spec.training.model_dump(mode="json", exclude=_TRAINING_KNOBS | _RUN_ONLY, exclude_defaults=True),
        "space": space,
    }


def hashes(readable: dict[str, Any]) -> dict[str, str]:
    """Section -> short SHA-256 of its canonical JSON."""
    return {
        name: hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]
        for name, value in readable.items()
    }


def check(study: optuna.Study, spec: StudySpec, allow_changed: bool = False, log=_log.info) -> None:
    """Record the fingerprint on a study that has none; refuse (or warn, if allowed) when it differs."""
    readable = sections(spec)
    stored = study.user_attrs.get("fingerprint")
    if stored is None:  # a new study, or one created before fingerprints existed
        study.set_user_attr("fingerprint", hashes(readable))
        study.set_user_attr("fingerprint_sections", readable)
        return
    if "content" not in study.user_attrs.get("fingerprint_sections", {}).get("data", {"content": None}):
        readable["data"].pop("content", None)  # a study from before content was recorded: compare the rest
    current = hashes(readable)
    changed = [name for name in current if stored.get(name) != current[name]]
    if not changed:
        return
    if not _has_results(study):  # only failed trials: nothing to mix, the edited file takes over
        full = sections(spec)  # with the data's content, also where the stored study had none
        study.set_user_attr("fingerprint", hashes(full))
        study.set_user_attr("fingerprint_sections", full)
        log(
            f"study {spec.study.name!r}: the study file changed ({', '.join(changed)}); the stored study holds no "
            "result yet (only failed trials), so it goes on with the edited file"
        )
        return
    details = _differences(study.user_attrs.get("fingerprint_sections", {}), readable, changed)
    message = (
        f"study.name = {spec.study.name!r}: the stored study was created from a different study file; "
        f"changed: {', '.join(changed)}{details}. Its trials and new ones would not be comparable; {FIX}"
    )
    if not allow_changed:
        raise UserError(message)
    log(f"WARNING (--allow-changed-study): {message}")


def _has_results(study: optuna.Study) -> bool:
    """Whether the study holds a trial whose results a new trial could be mixed with (not only failures)."""
    return any(
        t.state != optuna.trial.TrialState.FAIL
        and not (t.state == optuna.trial.TrialState.WAITING and t.user_attrs.get("baseline"))
        for t in study.get_trials(deepcopy=False)
    )


def _differences(old: dict[str, Any], new: dict[str, Any], changed: list[str], limit: int = 4) -> str:
    """' (space.adalora.target_modules: stored X, file Y; ...)' for the first few changed keys."""
    out = []
    for name in changed:
        before, after = old.get(name, {}), new[name]
        for key in sorted(set(before) | set(after), key=str):
            if before.get(key) != after.get(key):
                out.append(f"{name}.{key}: stored {_short(before.get(key))}, file {_short(after.get(key))}")
    return f" ({'; '.join(out[:limit])}{'; ...' if len(out) > limit else ''})" if out else ""


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _dump(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value
