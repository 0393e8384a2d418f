"""The listing commands (`models`, `datasets`, `methods`) print every registered name and exit 0."""

from __future__ import annotations

import pytest

from robustdistill import data, methods, models
from tests.clirun import main_exit_code


@pytest.mark.parametrize(
    ("command", "names"),
    [("models", models.available), ("datasets", data.available), ("methods", methods.available)],
)
def test_listing_names_every_registered_entry(command, names, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    code = main_exit_code([command])
    out, err = capsys.readouterr()
    assert code == 0, err
    for name in names():
        assert name in out, f"{name} missing from `robustdistill {command}`"
