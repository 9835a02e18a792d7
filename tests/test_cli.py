"""The ``probe`` command line: entry points, verbs, errors as one line."""

import subprocess
import sys

import pytest

from probe.cli import COMMANDS, build_parser, main


def test_python_dash_m_probe_prints_help():
    done = subprocess.run([sys.executable, "-m", "probe", "--help"], check=False, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0
    for verb in COMMANDS:
        assert verb in done.stdout


def test_every_verb_is_available():
    parser = build_parser()
    verbs = parser._subparsers._group_actions[0].choices  # argparse keeps sub-parsers here
    assert set(verbs) == set(COMMANDS)


def test_no_verb_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage: probe" in capsys.readouterr().out


def test_unknown_verb_is_refused():
    with pytest.raises(SystemExit) as exit_info:
        main(["dmeo"])
    assert exit_info.value.code == 2


def test_demo_refuses_a_non_empty_folder_without_force(tmp_path, capsys):
    (tmp_path / "something.txt").write_text("keep me")
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--force" in err and str(tmp_path) in err
    assert (tmp_path / "something.txt").read_text() == "keep me"


def test_the_demo_refusal_comes_before_torch_is_imported(tmp_path):
    (tmp_path / "something.txt").write_text("keep me")
    code = ("import sys; from probe.cli import main; "
            f"code = main(['demo', '--quick', '--out', {str(tmp_path)!r}]); print(code, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["2", "False"] and "--force" in done.stderr
