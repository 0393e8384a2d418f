"""The `robustdistill` command.

Every sub-command takes `--config FILE.yaml` plus `key=value` arguments or flags; flags win
over `key=value`, which win over the file. User errors print one line and exit non-zero; `--debug`
shows the traceback.

One module per command group: `training` (train-teacher, distill), `evaluation` (evaluate,
report), `demo`, `export`, `listings` (models, zoo, datasets, methods); `common` holds the app and
the shared options, `entry` the entry point `main`.
"""

from __future__ import annotations

from collections.abc import Callable

from robustdistill.cli import demo, evaluation, export, listings, training
from robustdistill.cli.common import ATTACK_NAMES, _Command, app
from robustdistill.cli.entry import main

#: every sub-command and its function, in the order `robustdistill --help` lists them
COMMANDS: dict[str, Callable[..., None]] = {
    "train-teacher": training.train_teacher,
    "distill": training.distill,
    "evaluate": evaluation.evaluate,
    "report": evaluation.report,
    "demo": demo.demo,
    "export": export.export,
    "models": listings.list_models,
    "zoo": listings.list_zoo,
    "datasets": listings.list_datasets,
    "methods": listings.list_methods,
}
for _name, _function in COMMANDS.items():
    app.command(_name, cls=_Command)(_function)

__all__ = ["ATTACK_NAMES", "COMMANDS", "app", "main"]
