"""The command line: --help everywhere, errors as one line with exit code 2, the quickstart runs."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llmrec.cli import build_parser, main


def _all_commands(parser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name)
                yield from _all_commands(sub, (*prefix, name))


def test_help_everywhere(capsys):
    cmds = list(_all_commands(build_parser()))
    assert ("data", "build") in cmds and ("eval",) in cmds and ("baseline", "train") in cmds
    for cmd in cmds:
        with pytest.raises(SystemExit) as e:
            main([*cmd, "--help"])
        assert e.value.code == 0, cmd
        assert "usage: llmrec" in capsys.readouterr().out


def test_console_script_error_is_one_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "llmrec", "data", "split", str(tmp_path / "missing"), "--protocol",
                        "loo"], capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and p.stderr.startswith("error: ")
    assert "dataset folder not found" in p.stderr


def test_readme_test_command_is_what_ci_runs():
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    ci = (root / ".ci" / "run").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
    test_cmd = next(b for b in blocks if "pytest" in b).strip()
    assert test_cmd in ci
