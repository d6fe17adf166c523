"""`mana-ai --version` and `--help`: what an operator sees before anything starts."""

from __future__ import annotations

import re

import pytest

from http_api.app import VERSION
from supervisor import main


def test_version_prints_the_one_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"mana-ai {VERSION}\n"


def test_help_says_what_each_command_does(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for command, words in [("serve", "daemon"), ("tick", "one cycle"), ("migrate", "migrations"),
                           ("demo", "throwaway"), ("stand-in-llm", "stand-in LLM"),
                           ("seed-example", "example mission")]:
        line = re.search(rf"^\s+{command}\s+(.+)$", out, re.MULTILINE)
        assert line is not None and words in line.group(1), out
    assert "--version" in out and "MANA_AI_STATE_DIR" in out


def test_an_unknown_command_is_refused_before_anything_starts(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serv"])
    assert exited.value.code == 2
    assert "invalid choice: 'serv'" in capsys.readouterr().err
