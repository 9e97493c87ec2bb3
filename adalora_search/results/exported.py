"""An export on disk: what ``export`` says of it, and repointing a moved or copied one (``export --relocate``).

Reads and rewrites JSON and Markdown only: no training stack is imported.
"""

from __future__ import annotations

import json
from pathlib import Path

from adalora_search import files
from adalora_search.results.manifest import manifest_path, read_manifest
from adalora_search.results.model_card import peft_class


def describe_export(out: Path) -> list[str]:
    """What ``export`` prints after writing ``out``: what each folder is, and when there is no adapter."""
    data = read_manifest(out, "--out")
    lines = [f"export written: {out}"]
    if (out / "adapter").is_dir():
        lines.append(
            f"  adapter/: trial {data.trial}'s trained adapter and tokenizer: "
            f"{peft_class(data.task)}.from_pretrained({str(out / 'adapter')!r})"
        )
    else:
        why = (
            f"it could not be kept when it trained: {data.adapter_failure}"
            if data.adapter_failure
            else "study.keep_top_k_adapters: 0, or it was pushed out of the top k"
        )
        lines.append(
            f"  no adapter/: the study kept no trained adapter for trial {data.trial} ({why}); "
            f"`adalora-search retrain {out}` trains the exported LoRA"
        )
    lines.append("  lora/, adalora/: configurations to train with (retrain), not trained adapters")
    if str(out.resolve()) not in str(data.base_model_name_or_path) and (out / "base").is_dir():
        lines.append(f"  base/: moved since export; run `adalora-search export --relocate {out}`")
    return lines


def relocate(out: Path) -> list[str]:
    """Point every config of a moved or copied export at its own ``base/`` (``export --relocate DIR``).

    PEFT's ``AutoPeftModel...from_pretrained`` loads ``base_model_name_or_path`` as written: an export whose
    base is its ``base/`` folder names that folder by its absolute path, which a move breaks.

    Raises:
        UserError: ``out`` holds no export.
    """
    path = manifest_path(out, "--relocate")  # an export of any version: only its base is read
    old = str(json.loads(path.read_text()).get("base_model_name_or_path"))
    if not (out / "base").is_dir() or Path(old).name != "base":
        return [f"{out}: the base model is {old!r}, not a folder of the export: nothing to relocate"]
    new = str((out / "base").resolve())
    old_out, new_out = str(Path(old).parent), str(out.resolve())
    if old == new:
        return [f"{out}: base_model_name_or_path is already {new}: nothing to relocate"]
    changed = []
    for file in [path, out / "rank_config.yaml", *out.glob("*/adapter_config.json"), *out.glob("**/README.md")]:
        if file.is_file() and old_out in (text := file.read_text()):
            files.write_text(file, text.replace(old_out, new_out), "--relocate")
            changed.append(str(file.relative_to(out)))
    return [f"{out}: base_model_name_or_path -> {new} in {len(changed)} files ({', '.join(changed)})"]
