"""The package layering: every import in src/robustdistill goes to a lower layer, so no package cycle can form.

Function-local imports count too: a lazy import hides a cycle from the interpreter, not from the design.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "robustdistill"

#: lowest first; a unit (a sub-package or a top-level module) may import only units of lower layers,
#: not those of its own layer
LAYERS: tuple[tuple[str, ...], ...] = (
    ("robustdistill", "errors"),  # the root package: its version and lazy sub-package access
    ("utils", "registry", "lock", "run_dir"),
    ("runtime",),  # ranks and collectives, progress display, metrics log
    ("data",),
    ("config",),
    ("models",),
    ("attacks",),
    ("methods",),
    ("evaluate", "train"),  # neither imports the other: fit takes its evaluation as a callback
    ("runs",),  # the run assembly: data, models, teachers, method, evaluation callback, fit
    ("demo",),
    ("cli",),
    ("__main__",),
)
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> str:
    """The layer unit of a module: `robustdistill.methods.gacd` -> `methods`, `robustdistill` -> itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _is_module(name: str) -> bool:
    return (SRC / f"{name}.py").is_file() or (SRC / name / "__init__.py").is_file()


def imported_units(source: str, module: str, *, is_package: bool) -> list[tuple[int, str]]:
    """(line, unit) of every robustdistill import in `source`, the source of `module`."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            if base == "robustdistill":  # `from robustdistill import data`: the sub-package itself
                targets = [f"robustdistill.{a.name}" if _is_module(a.name) else base for a in node.names]
            else:
                targets = [base]
        found += [(node.lineno, _unit(t)) for t in targets if t.split(".")[0] == "robustdistill"]
    return found


def layering_violations(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """Imports of `module` that go to its own layer or above (its own unit excepted)."""
    unit = _unit(module)
    problems = []
    for line, target in imported_units(source, module, is_package=is_package):
        if target == unit:
            continue
        if target not in RANK:
            problems.append(f"{module}:{line} imports '{target}', which is in no layer of tests/test_layering.py")
        elif RANK[target] >= RANK[unit]:
            problems.append(
                f"{module}:{line} imports '{target}' (layer {RANK[target]}, not below {unit}'s {RANK[unit]})"
            )
    return problems


def test_every_unit_of_the_source_tree_has_a_layer():
    units = {_unit(_module_name(path)) for path in SRC.rglob("*.py")}
    assert units <= set(RANK), f"place {sorted(units - set(RANK))} in LAYERS"


def test_every_import_goes_to_a_lower_layer():
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        module = _module_name(path)
        problems += layering_violations(path.read_text(), module, is_package=path.name == "__init__.py")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("module", "source", "target"),
    [
        ("robustdistill.methods.gacd", "from robustdistill.train import distributed as dist", "train"),
        ("robustdistill.evaluate.suite", "def f():\n    from robustdistill.train.progress import Progress", "train"),
        ("robustdistill.train.loop", "from robustdistill import evaluate", "evaluate"),
        ("robustdistill.train.loop", "from ..evaluate import run", "evaluate"),
        ("robustdistill.attacks.pgd", "import robustdistill.cli", "cli"),
        ("robustdistill.data.loader", "from robustdistill.runs import load_model", "runs"),
    ],
)
def test_an_upward_import_is_reported(module, source, target):
    (problem,) = layering_violations(source, module)
    assert f"imports '{target}'" in problem and problem.startswith(f"{module}:")


def test_imports_within_a_unit_and_downwards_pass():
    source = "from robustdistill.methods.base import Method\nfrom robustdistill.runtime import distributed\n"
    assert layering_violations(source, "robustdistill.methods.gacd") == []
    assert layering_violations("from . import faults\nimport robustdistill", "robustdistill.train.checkpoint") == []
