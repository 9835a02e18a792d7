"""One error path for the command line: every user mistake ends in one line, exit status 2, no traceback."""

import pytest

from probe.cli import main

SCENARIOS = {
    "train: a fractional batch size": (["train", "mlp", "--set", "batch_size=1.5"], "batch_size"),
    "train: a learning rate that is not a number": (["train", "mlp", "--set", "lr=abc"], "lr"),
    "train: a zero width": (["train", "cnn", "--set", "width=0"], "width"),
    "train: an unknown device": (["train", "mlp", "--device", "tpu"], "unknown device 'tpu'"),
    "train: an unknown dataset option": (["train", "mlp", "--dataset-option", "bogus=1"], "bogus"),
    "train: an unknown setting": (["train", "mlp", "--set", "hiden=[3]"], "did you mean 'hidden'"),
    "record: a dataset of another shape": (["record", "cnn", "--dataset", "natural-patches"], "(1, 16, 16)"),
    "record: an unknown device": (["record", "cnn", "--device", "tpu"], "unknown device 'tpu'"),
    "layers: a dataset of another shape": (["layers", "cnn", "--dataset", "natural-patches"], "(1, 8, 8)"),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_a_user_mistake_is_one_line_and_status_2(scenario, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv, expected = SCENARIOS[scenario]
    if argv[0] in ("train", "record"):
        argv = [*argv, "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"probe {argv[0]}: error: "), err
    assert expected in lines[0] and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # nothing was written
