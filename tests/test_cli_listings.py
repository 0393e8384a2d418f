"""The listing commands (`models`, `datasets`, `methods`) print every registered name and exit 0."""

from __future__ import annotations

import pytest

from robustdistill import data, methods, models
from robustdistill.cli import main


@pytest.mark.parametrize(
    ("command", "names"),
    [("models", models.available), ("datasets", data.available), ("methods", methods.available)],
)
def test_listing_names_every_registered_entry(command, names, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as info:
        main([command])
        raise SystemExit(0)
    out, err = capsys.readouterr()
    assert info.value.code in (0, None), err
    for name in names():
        assert name in out, f"{name} missing from `robustdistill {command}`"
