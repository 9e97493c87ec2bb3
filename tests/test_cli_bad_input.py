"""The malformed-study corpus: every file ends in exit code 2, a precise message, no traceback,
and no storage created. Each file's first line says what the message must contain."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

CORPUS = Path(__file__).parent / "bad_studies"
FILES = sorted(CORPUS.glob("*.yaml"))


def _expected(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: ...'"
    return first.removeprefix("# expect: ")


def test_corpus_is_large_enough() -> None:
    assert len(FILES) >= 40


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_bad_study_exits_2_with_message(path: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    shutil.copytree(CORPUS, tmp_path / "corpus")
    study = tmp_path / "corpus" / path.name
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, output = run_cli(["run", str(study)], monkeypatch, capsys)
    assert code == 2
    assert _expected(path) in output
    assert str(study) in output  # names the file
    assert "Traceback" not in output
    assert "s3cret" not in output  # a password in a storage URL is never printed
    assert not list((tmp_path / "corpus").glob("*.db")), "no storage may be created for a bad study"


def test_python_tag_is_not_executed(tmp_path: Path, monkeypatch, capsys) -> None:
    marker = tmp_path / "pwned"
    study = tmp_path / "evil.yaml"
    study.write_text(f"study: !!python/object/apply:os.system ['touch {marker}']\n")
    code, output = run_cli(["validate", str(study)], monkeypatch, capsys)
    assert code == 2 and not marker.exists()


@pytest.mark.slow
def test_real_process_exit_code_and_no_traceback(tmp_path: Path) -> None:
    study = tmp_path / "bad.yaml"
    study.write_text((CORPUS / "target_r_ge_init_r.yaml").read_text())
    proc = subprocess.run(
        [sys.executable, "-m", "adalora_search", "validate", str(study)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "target_r must be < init_r" in proc.stderr and "Traceback" not in proc.stderr


def test_errors_carry_yaml_line_numbers(tmp_path: Path, monkeypatch, capsys) -> None:
    study = tmp_path / "s.yaml"
    shutil.copy(CORPUS / "unknown_schedule_key.yaml", study)
    line = next(i for i, text in enumerate(study.read_text().splitlines(), 1) if "deltaT" in text)
    code, output = run_cli(["validate", "--no-data", str(study)], monkeypatch, capsys)
    assert code == 2 and f"{study}:{line}:" in output


@pytest.mark.parametrize(
    "name, said, not_said",
    [
        ("objective_direction_typo.yaml", "1 problem(s)", "valid list"),  # one mistake, one line
        ("deep_nesting.yaml", "nested deeper than 50 levels", "= None"),
        ("tab_indent.yaml", "indent with spaces, not tabs", "= None"),
    ],
)
def test_a_mistake_is_said_once_and_plainly(
    name: str, said: str, not_said: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    """Issue #21 items 7 and 8: a second confusing union line, `= None` on whole-file problems."""
    code, output = run_cli(["validate", "--no-data", str(CORPUS / name)], monkeypatch, capsys)
    assert code == 2 and said in output and not_said not in output, output


def test_a_binary_file_is_not_a_path_problem(tmp_path: Path, monkeypatch, capsys) -> None:
    study = tmp_path / "study.yaml"
    study.write_bytes(bytes(range(128, 256)) * 4)
    code, output = run_cli(["validate", str(study)], monkeypatch, capsys)
    assert code == 2 and "not a text file" in output and "check the path" not in output


def test_problems_found_after_loading_carry_the_study_file_and_line(tmp_path: Path, monkeypatch, capsys) -> None:
    """Issue #21 item 7: the 4-bit refusal was located at `<input>`."""
    study = tmp_path / "q.yaml"
    shutil.copy(CORPUS / "quantization_4bit_on_cpu.yaml", study)
    line = next(i for i, text in enumerate(study.read_text().splitlines(), 1) if text.startswith("  quantization:"))
    code, output = run_cli(["validate", str(study)], monkeypatch, capsys)
    assert code == 2 and f"{study}:{line}: model.quantization" in output and "<input>" not in output, output
