"""`--help` explains every option: a description, a default, no `<bool>` after flags; plus --version,
`methods NAME` and the did-you-mean of a mistyped path."""

from __future__ import annotations

import pytest
import typer

import robustdistill
from robustdistill import attacks, methods
from robustdistill.cli import ATTACK_NAMES, app
from tests.clirun import main_exit_code

COMMAND = typer.main.get_command(app)
SUBCOMMANDS = sorted(COMMAND.commands)  # type: ignore[attr-defined]


def _run(args: list[str], capsys, monkeypatch) -> tuple[int, str, str]:
    monkeypatch.setenv("COLUMNS", "200")
    code = main_exit_code(args)
    out, err = capsys.readouterr()
    return code, out, err


def _parameters(name: str | None) -> list:
    command = COMMAND if name is None else COMMAND.commands[name]  # type: ignore[attr-defined]
    return [p for p in command.params if p.name != "help"]


@pytest.mark.parametrize("name", [None, *SUBCOMMANDS])
def test_every_option_has_a_description_and_a_default(name):
    for param in _parameters(name):
        text = (getattr(param, "help", None) or "").strip()
        assert text, f"{name or 'robustdistill'}: {param.opts or param.name} has no description"
        flag = getattr(param, "is_flag", False)
        if flag or param.required:
            continue  # a flag is off unless given; a required value has no default
        shown = param.default is not None and param.show_default is not False
        assert shown or "default" in text.lower(), f"{name}: {param.opts} says nothing of its default"


@pytest.mark.parametrize("name", [None, *SUBCOMMANDS])
def test_help_pages_describe_the_command_and_show_no_bool_placeholder(name, capsys, monkeypatch):
    code, out, err = _run([*([name] if name else []), "--help"], capsys, monkeypatch)
    assert code == 0, err
    assert "<bool>" not in out
    if name:
        assert COMMAND.commands[name].help.split("\n")[0].split(";")[0][:40] in " ".join(out.split())  # type: ignore[attr-defined]


def test_evaluate_help_lists_every_attack_name(capsys, monkeypatch):
    _, out, _ = _run(["evaluate", "--help"], capsys, monkeypatch)
    flat = " ".join(out.replace("│", " ").split())
    for name in attacks.available():
        assert name in ATTACK_NAMES, name
    assert "apgd-ce+apgd-t" in flat and "autoattack-plus" in flat and "cw-N" in flat


def test_version(capsys, monkeypatch):
    code, out, _ = _run(["--version"], capsys, monkeypatch)
    assert code == 0 and out.startswith(f"robustdistill {robustdistill.__version__} (torch ")


def test_methods_name_shows_the_constructor_defaults(capsys, monkeypatch):
    code, out, err = _run(["methods", "rslad"], capsys, monkeypatch)
    assert code == 0, err
    for row in methods.option_table("rslad"):
        assert row.name in out
        if isinstance(row.default, (int, float)) and not isinstance(row.default, bool):
            assert f"{row.default:.4g}" in out, row.name
    code, _, err = _run(["methods", "rsald"], capsys, monkeypatch)
    assert code == 1 and "rslad" in err  # the registry's did-you-mean


def test_a_mistyped_run_directory_gets_a_did_you_mean(tmp_path, capsys, monkeypatch):
    (tmp_path / "demo").mkdir()
    code, _, err = _run(["report", str(tmp_path / "dmeo")], capsys, monkeypatch)
    assert code == 1 and "does not exist; did you mean" in err and str(tmp_path / "demo") in err
    code, _, err = _run(["evaluate", "--checkpoint", str(tmp_path / "nothing-like-it")], capsys, monkeypatch)
    assert code == 1 and "does not exist" in err and "holds demo" in err


def test_heartbeat_prints_while_a_silent_step_runs(capsys):
    import time

    from robustdistill.cli.common import _heartbeat

    with _heartbeat("loading", enabled=True, every=0.05):
        time.sleep(0.3)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "loading" and len(lines) >= 3 and all(line.startswith("loading (") for line in lines[1:])
    with _heartbeat("quiet", enabled=False, every=0.05):
        time.sleep(0.1)
    assert capsys.readouterr().err == ""
