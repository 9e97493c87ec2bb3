"""Issue #21 item 1: chat templates are not trusted blindly (field cases case21, case22).

Templates that raise, truncation that keeps the template's structure, loss masks verified against the
whole rendering (templates that rewrite history, that ignore add_generation_prompt, with
{% generation %} blocks). Tiny Llama with MiniLM's tokenizer; the templates are the test's own.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import causal_study, run_cli, tiny_decoder, write_study

from adalora_search.errors import UserError
from adalora_search.search.runner import prepare_data
from adalora_search.study.loader import load_spec
from adalora_search.study.spec import ModelSpec
from adalora_search.tasks import lm_rows
from adalora_search.train.modeling import load_tokenizer

TURN = "<{{ m['role'] }}> {{ m['content'] }} [SEP] "
GEN_PROMPT = "{% if add_generation_prompt %}<assistant> {% endif %}"
# a default system prompt when the chat has none, as SmolLM2's and Qwen's templates do
DEFAULT_SYSTEM = (
    "{% if messages[0]['role'] != 'system' %}<system> you are a helpful bot [SEP] {% endif %}"
    "{% for m in messages %}" + TURN + "{% endfor %}" + GEN_PROMPT
)
# refuses a system turn, as Gemma's templates do
STRICT_SYSTEM = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('This template has no "
    "system role') }}{% endif %}" + TURN + "{% endfor %}" + GEN_PROMPT
)
# renders earlier replies differently from the last one (history rewriting, as reasoning templates do)
REWRITES = (
    "{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}<assistant> (earlier) [SEP] "
    "{% else %}" + TURN + "{% endif %}{% endfor %}" + GEN_PROMPT
)
REWRITES_WITH_GENERATION = (
    "{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}<assistant> (earlier) [SEP] "
    "{% elif m['role'] == 'assistant' %}<assistant> {% generation %}{{ m['content'] }} [SEP]{% endgeneration %} "
    "{% else %}" + TURN + "{% endif %}{% endfor %}" + GEN_PROMPT
)
# ignores add_generation_prompt: the reply's header is part of the assistant turn only
NO_GENERATION_PROMPT = "{% for m in messages %}" + TURN + "{% endfor %}"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_decoder(tmp_path_factory.mktemp("chat"), "llama")


def _with_template(model_dir: Path, tmp_path: Path, template: str) -> Path:
    """A copy of the tiny model whose tokenizer ships ``template`` as its own chat template."""
    from transformers import AutoTokenizer

    out = tmp_path / "templated"
    shutil.copytree(model_dir, out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    tokenizer.chat_template = template
    tokenizer.save_pretrained(out)
    return out


def _tokenizer(model_dir: Path, template: str):  # noqa: ANN202 - a transformers tokenizer
    return load_tokenizer(ModelSpec(name_or_path=str(model_dir), task="causal_lm", chat_template=template))


def _chat_study(tmp_path: Path, model_dir: Path, rows: list[dict], template: str | None, **data) -> Path:
    path = tmp_path / "chats.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    study = causal_study(
        model_dir,
        model={"chat_template": template} if template else {},
        data={
            "source": {"type": "files", "format": "jsonl", "paths": {"train": str(path)}},
            "prompt_template": None,
            "response_field": None,
            "messages_field": "messages",
            "split": {"validation": 0.25, "test": 0.0, "seed": 0},
            **data,
        },
    )
    study["data"] = {k: v for k, v in study["data"].items() if v is not None}
    return write_study(tmp_path, study)


SHOPS = [
    {
        "messages": [
            {"role": "system", "content": "You answer with one word."},
            {"role": "user", "content": f"shop {i}: is the bakery open on day {i % 6}?"},
            {"role": "assistant", "content": "yes" if i % 3 else "no"},
        ]
    }
    for i in range(40)
]


def test_a_template_that_raises_exits_2_before_trial_0_naming_row_message_and_fix(
    model_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """Field case case22: validate and run ended in a TemplateError traceback."""
    path = _chat_study(tmp_path, _with_template(model_dir, tmp_path, STRICT_SYSTEM), SHOPS, None)
    for command in ("validate", "run"):
        code, out = run_cli([command, str(path)], monkeypatch, capsys)
        assert code == 2 and "Traceback" not in out, out
        assert "its chat template failed on 30 of 30 rows of the train split; first, row 0" in out
        assert "You answer with one word." in out  # the row, as the user wrote it
        assert "TemplateError: This template has no system role" in out  # the template's own message
        assert "set data.system_turn: merge" in out and "model.chat_template" in out  # the fixes
    assert not list(tmp_path.glob("*.db")), "refused before any storage is touched"


@pytest.mark.parametrize("how, user_starts", [("merge", "You answer with one word.\n\nshop"), ("drop", "shop")])
def test_system_turn_merge_or_drop_makes_such_a_template_usable(
    how: str, user_starts: str, model_dir: Path, tmp_path: Path
) -> None:
    spec = load_spec(_chat_study(tmp_path, model_dir, SHOPS, STRICT_SYSTEM, system_turn=how))
    data = prepare_data(spec)
    tokenizer = data.tokenizer
    text = tokenizer.decode(data.splits["train"].columns["input_ids"][0])
    assert text.startswith(
        "< user > " + tokenizer.decode(tokenizer(user_starts, add_special_tokens=False)["input_ids"])
    )
    assert ("you answer with one word" in text) == (how == "merge")


def test_truncation_keeps_the_template_structure_and_the_response(
    model_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """Field case case21: long prompts were cut from token 0, losing the system header and the role markers."""
    words = "the quiet harbour keeps its lamps lit while the morning ferry waits by the grey stone pier".split()
    rows = [
        {
            "note": f"note {i}: " + " ".join(words[(i + k) % len(words)] for k in range(60)),
            "question": "which way does the ferry go?",
            "answer": ["north", "south", "east", "west"][i % 4],
        }
        for i in range(40)
    ]
    (tmp_path / "notes.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    study = causal_study(
        _with_template(model_dir, tmp_path, DEFAULT_SYSTEM),
        data={
            "source": {"type": "files", "format": "jsonl", "paths": {"train": "notes.jsonl"}},
            "prompt_template": "{note}\nquestion: {question}",
            "response_field": "answer",
            "use_chat_template": True,
            "max_length": 40,
            "split": {"validation": 0.25, "test": 0.0, "seed": 0},
        },
    )
    path = write_study(tmp_path, study)
    data = prepare_data(load_spec(path))
    tokenizer = data.tokenizer
    for split in data.splits.values():
        for ids, labels, answer in zip(split.columns["input_ids"], split.columns["labels"], split.columns["reference"]):
            text = tokenizer.decode(ids)
            assert len(ids) <= 40
            assert text.startswith("< system > you are a helpful bot [SEP] < user > ")  # the template's opening
            assert "question : which way does the ferry go? [SEP] < assistant > " in text  # the template's text
            assert text.endswith(f"< assistant > {answer} [SEP]")  # the header and the response, whole
            assert tokenizer.decode([t for t, m in zip(ids, labels) if m != -100]) == f"{answer} [SEP]"
    assert data.truncated == {"train": 30, "validation": 10}
    code, out = run_cli(["validate", str(path)], monkeypatch, capsys)
    assert code == 0 and "rows longer than data.max_length, truncated: train 30 of 30, validation 10 of 10" in out


def test_merged_system_text_survives_truncation(model_dir: Path) -> None:
    tokenizer = _tokenizer(model_dir, STRICT_SYSTEM)
    chat = [
        {"role": "system", "content": "answer in one word"},
        {"role": "user", "content": "first " * 30 + "question"},
        {"role": "assistant", "content": "alpha"},
    ]
    fitted = lm_rows.fit_chat(tokenizer, chat, 20, "merge")
    text = tokenizer.decode(fitted.ids)
    assert fitted.truncated and text.startswith("< user > answer in one word first") and len(fitted.ids) <= 20
    assert text.endswith("question [SEP] < assistant > alpha [SEP]")


def test_a_chat_too_long_loses_its_oldest_exchanges_first(model_dir: Path) -> None:
    tokenizer = _tokenizer(model_dir, DEFAULT_SYSTEM)
    chat = [
        {"role": "user", "content": "first question about boats"},
        {"role": "assistant", "content": "alpha"},
        {"role": "user", "content": "second question about trains"},
        {"role": "assistant", "content": "beta"},
        {"role": "user", "content": "third question about planes"},
        {"role": "assistant", "content": "gamma"},
    ]
    whole = lm_rows.fit_chat(tokenizer, chat, 200)
    assert whole is not None and not whole.truncated
    fitted = lm_rows.fit_chat(tokenizer, chat, len(whole.ids) - 5)
    text = tokenizer.decode(fitted.ids)
    assert fitted.truncated and "boats" not in text and "alpha" not in text  # the oldest exchange went
    assert "trains" in text and text.endswith("< assistant > gamma [SEP]")
    assert text.startswith("< system > you are a helpful bot [SEP] < user > second")
    assert lm_rows.fit_chat(tokenizer, chat, 12) is None  # the system prompt and the reply alone do not fit


def test_a_template_that_rewrites_history_is_refused_unless_it_marks_replies(
    model_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    chat = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "alpha beta"},
        {"role": "user", "content": "second question"},
        {"role": "assistant", "content": "gamma"},
    ]
    with pytest.raises(lm_rows.RowError, match="renders the conversation up to assistant turn 1 differently"):
        lm_rows.chat_tokens(_tokenizer(model_dir, REWRITES), chat)
    rows = [{"messages": chat}] * 3 + SHOPS[:37]
    code, out = run_cli(
        ["validate", str(_chat_study(tmp_path, model_dir, rows, REWRITES, system_turn="drop"))], monkeypatch, capsys
    )
    assert code == 2 and "rewrites earlier turns" in out and "{% generation %}" in out, out
    tokenizer = _tokenizer(model_dir, REWRITES_WITH_GENERATION)  # the template's own mask is used
    ids, mask, start = lm_rows.chat_tokens(tokenizer, chat)
    assert tokenizer.decode([t for t, m in zip(ids, mask) if m]) == "gamma [SEP]"
    assert tokenizer.decode(ids[:start]).endswith("second question [SEP] < assistant >")


@pytest.mark.parametrize("reply", ["yes", "a", "s", "assistant"])  # also text that occurs in the turn's header
def test_a_template_without_generation_prompt_keeps_the_header_out_of_the_loss(model_dir: Path, reply: str) -> None:
    tokenizer = _tokenizer(model_dir, NO_GENERATION_PROMPT)
    chat = [{"role": "user", "content": "say it"}, {"role": "assistant", "content": reply}]
    ids, mask, start = lm_rows.chat_tokens(tokenizer, chat)
    assert tokenizer.decode([t for t, m in zip(ids, mask) if m]) == f"{reply} [SEP]"  # the reply and its end marker
    assert tokenizer.decode(ids[:start]) == "< user > say it [SEP] < assistant >"  # generation starts after it


def test_a_template_that_changes_the_reply_is_refused_saying_so(model_dir: Path) -> None:
    upper = "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] | upper }} [SEP] {% endfor %}" + GEN_PROMPT
    chat = [{"role": "user", "content": "say yes"}, {"role": "assistant", "content": "yes"}]
    with pytest.raises(lm_rows.RowError, match="changes or leaves out the text of assistant turn 1"):
        lm_rows.chat_tokens(_tokenizer(model_dir, upper), chat)


def test_message_content_given_as_parts_is_described_as_such(
    model_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    rows = [
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {"role": "assistant", "content": "hello"},
            ]
        }
    ] * 40
    code, out = run_cli(["validate", str(_chat_study(tmp_path, model_dir, rows, DEFAULT_SYSTEM))], monkeypatch, capsys)
    assert code == 2 and "content is a list of parts, not text; join the text parts" in out
    assert "null or a number" not in out


def test_chat_template_on_a_task_without_chats_is_refused() -> None:
    from conftest import study_dict

    from adalora_search.study.loader import parse_spec

    with pytest.raises(UserError, match="model.task classification renders no chat"):
        parse_spec(json.dumps(study_dict(model={"chat_template": DEFAULT_SYSTEM})))
