"""Pre-trial model checks: what would make every trial fail, found before trial 0 (``validate`` and ``run``).

Target modules that match nothing, ``max_length`` beyond the model's positions, a pretrained head of
another size, and what the platform lacks (``memory.platform_problems``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import AutoConfig

from adalora_search.errors import Problem, UserError
from adalora_search.study.spec import StudySpec
from adalora_search.tasks import get_task
from adalora_search.train import memory
from adalora_search.train.assets import resolve_model
from adalora_search.train.modeling import HEADS, matching, meta_model


def check_model(
    spec: StudySpec, linears: dict[str, tuple[int, int]], config: Any, label_names: list[str] | None = None
) -> None:
    """What would make every trial fail, found before trial 0; raises ``UserError`` listing it all."""
    from adalora_search.study.distributions import corners

    problems = []
    for targets in corners(spec.adalora.target_modules):
        if not matching(linears, list(targets)):
            names = sorted({n.rsplit(".", 1)[-1] for n in linears if not n.startswith(HEADS)})
            problems.append(
                Problem(
                    "adalora.target_modules",
                    targets,
                    f"matches no Linear or Conv1D module of {spec.model.name_or_path}; its module names end in {names}",
                )
            )
    problems += length_problems(spec, max_positions(config), bool(getattr(config, "is_encoder_decoder", False)))
    problems += _head_problems(spec, label_names)
    problems += memory.platform_problems(spec)
    if problems:
        raise UserError(f"{len(problems)} problem(s) with the model", problems)


def length_problems(spec: StudySpec, positions: int | None, encoder_decoder: bool) -> list[Problem]:
    """Every length the model will see against its ``positions``: the input (``data.max_length``); for a task that
    generates, the decoder's target (``data.max_target_length``, seq2seq) and the generated tokens
    (``training.generation.max_new_tokens``: after the decoder's start token on an encoder-decoder, after a prompt
    of up to ``max_length`` tokens on a decoder-only model). Beyond them every trial fails (an embedding index
    out of range), after training when it is generation.
    """
    if positions is None:
        return []
    name, data = spec.model.name_or_path, spec.data
    problems = []
    if data.max_length > positions:
        problems.append(
            Problem(
                "data.max_length", data.max_length, f"{name} has {positions} positions; use max_length <= {positions}"
            )
        )
    if not get_task(spec.model.task).generates:
        return problems
    new = spec.training.generation.max_new_tokens
    if encoder_decoder:
        if data.max_target_length > positions:
            problems.append(
                Problem(
                    "data.max_target_length",
                    data.max_target_length,
                    f"{name}'s decoder has {positions} positions; use max_target_length <= {positions} "
                    "(longer targets are cut)",
                )
            )
        if new + 1 > positions:
            problems.append(
                Problem(
                    "training.generation.max_new_tokens",
                    new,
                    f"{name}'s decoder has {positions} positions, one of them its start token; use "
                    f"max_new_tokens <= {positions - 1}",
                )
            )
    elif data.max_length <= positions < data.max_length + new:
        problems.append(
            Problem(
                "training.generation.max_new_tokens",
                new,
                f"a prompt of up to data.max_length = {data.max_length} tokens and {new} new tokens pass {name}'s "
                f"{positions} positions; use max_new_tokens <= {positions - data.max_length}, or a lower max_length",
            )
        )
    return problems


def max_positions(config: Any) -> int | None:
    """How many tokens the model's absolute position embeddings cover (None: no such limit)."""
    if getattr(config, "position_biased_input", True) is False:  # DeBERTa-v2/v3: relative positions only
        return None
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _head_problems(spec: StudySpec, label_names: list[str] | None) -> list[Problem]:
    """A pretrained checkpoint with a trained head of another size fails to load; say so up front.

    The checkpoint's config (its head's ``num_labels``) and, for a local checkpoint, the shapes in its
    safetensors headers are compared with the model this task builds (regression: one output).
    """
    expected = get_task(spec.model.task).config_kwargs(label_names).get("num_labels")
    if spec.model.init != "pretrained" or expected is None or spec.model.ignore_mismatched_sizes:
        return []
    path = resolve_model(spec.model.name_or_path)
    try:
        stored = AutoConfig.from_pretrained(path, trust_remote_code=spec.model.trust_remote_code)
    except (OSError, ValueError):
        return []
    head = get_task(spec.model.task).auto_class.removeprefix("AutoModel")
    has_head = any(a.endswith(head) for a in getattr(stored, "architectures", None) or [])
    found = stored.num_labels if has_head and stored.num_labels != expected else None
    if found is None:
        built = meta_model(spec.model, label_names)[0].state_dict()
        shapes = _checkpoint_shapes(Path(path))
        clash = next(
            (
                name
                for name, shape in shapes.items()
                if name in built and name.startswith(HEADS) and tuple(built[name].shape) != shape
            ),
            None,
        )
        found = shapes[clash][0] if clash is not None else None
    if found is None:
        return []
    return [
        Problem(
            "model.ignore_mismatched_sizes",
            False,
            f"the checkpoint's head has {found} outputs but model.task {spec.model.task} needs "
            f"{expected} here; set model.ignore_mismatched_sizes: true to train a new head",
        )
    ]


def _checkpoint_shapes(directory: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from a checkpoint's safetensors headers (no weights read): a local directory, or
    a Hub id's ``model.safetensors`` already in the local cache; {} otherwise.
    """
    from huggingface_hub import try_to_load_from_cache
    from safetensors import safe_open

    if directory.is_dir():
        found = sorted(directory.glob("*.safetensors"))
    else:
        try:
            cached = try_to_load_from_cache(str(directory), "model.safetensors")
        except ValueError:  # not a repository id
            cached = None
        found = [Path(cached)] if isinstance(cached, str) else []
    shapes: dict[str, tuple[int, ...]] = {}
    for file in found:
        try:
            with safe_open(str(file), framework="pt") as f:
                shapes.update({name: tuple(f.get_slice(name).get_shape()) for name in f.keys()})
        except (OSError, ValueError, RuntimeError):
            continue
    return shapes
