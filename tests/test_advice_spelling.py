"""Advice names the spelling of its context: keyword arguments in the Python API, flags on the command line."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

import probe
import zoo
from probe.cli import build_parser, main
from probe.cli._helpers import flag_spelling

REPO = Path(__file__).resolve().parents[1]
# The Python API: the zoo, the recording engine (not its command line or studies) and the analyses.
API_FILES = sorted([*REPO.glob("zoo/**/*.py"), *REPO.glob("probe/_*.py"), *REPO.glob("analyses/**/*.py")])


def _cli_flags() -> set[str]:
    parser = build_parser()
    verbs = parser._subparsers._group_actions[0].choices  # argparse keeps sub-parsers here
    return {option for sub in [parser, *verbs.values()] for action in sub._actions for option in action.option_strings
            if option.startswith("--") and option != "--help"}


def _docstrings(tree: ast.AST) -> set[int]:
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))]
    return {id(node.body[0].value) for node in nodes
            if node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}


def test_python_api_messages_name_keywords_not_command_line_flags():
    flags = _cli_flags()
    assert {"--overwrite", "--resume", "--force", "--allow-download", "--out"} <= flags
    assert len(API_FILES) > 30
    found = []
    for path in API_FILES:
        tree = ast.parse(path.read_text(), filename=str(path))
        docstrings = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                for flag in set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", node.value)) & flags:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: {flag} in {node.value!r}")
    assert not found, "Python API messages that advise a command-line flag:\n" + "\n".join(found)


def test_flag_spelling_translates_only_the_verbs_own_flags():
    message = ("pass overwrite=True or resume=True; choose another folder (out=...); allow_download=True; "
               "model.overwrite=True; retrain with zoo.train(..., force=True)")
    assert flag_spelling(message, ["--overwrite", "--out", "--allow-download", "--force"]) == (
        "pass --overwrite or resume=True; choose another folder (--out ...); --allow-download; model.overwrite=True; "
        "retrain with `probe train ... --force`"
    )


def test_advice_about_another_call_names_its_command(tmp_path, capsys):
    """`probe record` has a --resume of its own: resuming the run's training is `probe train ... --resume`."""
    zoo.train("mlp", out=tmp_path / "run", epochs=1, progress=False, device="cpu", hidden=[8])
    zoo.RunDir(tmp_path / "run").discard_final()  # as if killed after its last checkpoint
    with pytest.raises(FileNotFoundError, match=re.escape("zoo.train(..., resume=True)")):
        zoo.load(tmp_path / "run")
    assert main(["record", str(tmp_path / "run"), "--out", str(tmp_path / "rec"), "--no-progress"]) == 2
    shown = capsys.readouterr().err
    assert "`probe train ... --resume`" in shown and "zoo.train" not in shown and "resume=True" not in shown


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))


def test_a_complete_recording_asks_for_overwrite_true_in_python_and_overwrite_on_the_command_line(tmp_path, capsys):
    out = tmp_path / "rec"
    data = zoo.load_dataset("digits", split="test")
    probe.record(_net(), data, ["1"], out=out, device="cpu", progress=False)
    with pytest.raises(FileExistsError, match=r"overwrite=True") as err:
        probe.record(_net(), data, ["1"], out=out, device="cpu", progress=False)
    assert "--" not in str(err.value)

    (tmp_path / "net.py").write_text("import torch\ndef build():\n    torch.manual_seed(0)\n"
                                     "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))\n")
    assert main(["record", f"{tmp_path / 'net.py'}:build", "--layers", "1", "--out", str(out), "--no-progress"]) == 2
    shown = capsys.readouterr().err
    assert "--overwrite" in shown and "overwrite=True" not in shown


def test_an_existing_run_asks_for_resume_or_force_in_each_spelling(tmp_path, capsys):
    zoo.RunDir.create(tmp_path / "run").write_config({"name": "toy"})
    with pytest.raises(FileExistsError) as err:
        zoo.train("mlp", out=tmp_path / "run", epochs=1, progress=False)
    assert "resume=True" in str(err.value) and "force=True" in str(err.value) and "--" not in str(err.value)
    assert main(["train", "mlp", "--epochs", "1", "--out", str(tmp_path / "run")]) == 2
    shown = capsys.readouterr().err
    assert "--resume" in shown and "--force" in shown and "=True" not in shown


def test_missing_pretrained_weights_ask_for_allow_download_in_each_spelling(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty hub cache
    with pytest.raises(FileNotFoundError, match="allow_download=True") as err:
        zoo.load_pretrained("resnet18")
    assert "--allow-download" not in str(err.value)
    assert main(["layers", "pretrained:resnet18"]) == 2
    shown = capsys.readouterr().err
    assert "--allow-download" in shown and "allow_download=True" not in shown
