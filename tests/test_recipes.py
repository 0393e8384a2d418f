"""The paper recipes under `configs/`: every YAML file is a valid run configuration with the papers'
threat model, names a teacher recipe that exists, and runs one optimisation step.

The dry runs (`test_recipe_one_step`) use synthetic data of the dataset's real shape and classes
(3x32x32 for CIFAR-10/100, 3x96x96 for STL-10) with one batch of 2 images, overrides
`batch_size=2, steps=1, eval_every=0`, the recipe's own student, method, method options and
optimiser (SGD, lr, momentum, weight decay, schedule), and one call of `method(...)`, backward and
optimiser step, as `train.fit` does per batch. `test_fit_runs_a_recipe` runs one recipe through
`fit` itself (`fit` writes three checkpoints per call, too slow to repeat for every recipe).

Speed: the recipes' teachers are WideResNet-34-10 (46M parameters, seconds per step on a CPU). The
dry runs therefore replace every WRN-34-10 (the teachers, with random weights, built once per number
of classes and role and reused, and the trained model of the teacher recipes) by a `wrn-16-1`
stand-in of the same family and number of classes. The WRN-34-10 architecture itself is checked
separately by one forward pass at batch 1 (`test_wrn_34_10_forward`); the STL-10 dry runs exercise
the same family (global pooling) at 96x96.
"""

from __future__ import annotations

import math
import warnings
from functools import cache
from pathlib import Path

import pytest
import torch

from robustdistill import data, methods, models, runs
from robustdistill.config import RunConfig, load_config
from robustdistill.models.registry import parse_wrn
from robustdistill.train import fit
from robustdistill.train.schedule import make_scheduler

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RECIPES = sorted(CONFIGS.rglob("*.yaml"))
IDS = [str(path.relative_to(CONFIGS)) for path in RECIPES]

DATASETS = ("cifar10", "cifar100", "stl10")
STUDENTS = ("resnet-18", "mobilenet-v2")
DISTILLATION = ("kd", "ard", "iad", "rslad", "adaad", "mtard", "paths", "gacd")
NEWER = ("igdm", "saad", "dgad", "peeraid")  # CIFAR-10 ResNet-18 recipes
TEACHER_ARCH = "wrn-34-10"
STAND_IN = "wrn-16-1"
DRY_RUN = {"batch_size": 2, "steps": 1, "eval_every": 0}


@cache
def recipe(path: Path) -> RunConfig:
    return load_config(path)


@cache
def recipes_by_name() -> dict[str, RunConfig]:
    return {cfg.name: cfg for cfg in map(recipe, RECIPES) if cfg.name}


def num_classes(cfg: RunConfig) -> int:
    return int(data.info(cfg.data)["num_classes"])


def teacher_recipe(placeholder: str) -> RunConfig:
    """The recipe whose run directory `runs/<name>` is the placeholder path `placeholder`."""
    path = Path(placeholder)
    assert path.parent == Path("runs"), f"teacher placeholder '{placeholder}' is not runs/<recipe name>"
    found = recipes_by_name().get(path.name)
    assert found is not None, f"no recipe writes '{placeholder}' (no recipe has name: {path.name})"
    return found


@cache
def stand_in_teacher(classes: int, role: str) -> torch.nn.Module:
    torch.manual_seed(1 if role == "teacher" else 2)
    return models.create(STAND_IN, num_classes=classes)


def test_the_recipe_set_is_complete() -> None:
    present = set(IDS)
    expected = set()
    for dataset in ("cifar10", "cifar100"):
        expected |= {f"{dataset}/teacher-{kind}-{TEACHER_ARCH}.yaml" for kind in ("pgd-at", "trades", "standard")}
        for student in STUDENTS:
            expected |= {f"{dataset}/{method}-{student}.yaml" for method in (*DISTILLATION, "pgd-at", "trades")}
    expected |= {"stl10/gacd-resnet-18.yaml", "stl10/gacd-mobilenet-v2.yaml", "stl10/gacd-resnet-18-from-cifar100.yaml"}
    expected |= {f"cifar10/{method}-resnet-18.yaml" for method in NEWER}
    assert not expected - present, f"missing recipes: {sorted(expected - present)}"
    names = [recipe(path).name for path in RECIPES]
    assert all(names) and len(set(names)) == len(names), "every recipe needs a unique name (its run directory)"
    readme = (CONFIGS / "README.md").read_text()
    unlisted = [rel for rel in IDS if f"configs/{rel}" not in readme]
    assert not unlisted, f"configs/README.md does not list {unlisted}"


@pytest.mark.parametrize("path", RECIPES, ids=IDS)
def test_recipe_is_valid(path: Path) -> None:
    cfg = recipe(path)
    text = path.read_text()
    rel = path.relative_to(CONFIGS)
    # a header comment citing its source, with the command that runs it
    assert text.startswith("# ") and f"--config configs/{rel.as_posix()}" in text
    assert "github" in text or "METHODS.md" in text, "the header must say where the numbers come from"
    # data and threat model: L-inf 8/255, 10 PGD steps of 2/255
    assert cfg.data == rel.parts[0] and cfg.data in DATASETS
    assert math.isclose(cfg.resolved_eps(), 8 / 255, rel_tol=1e-12)
    assert cfg.step_size is not None and math.isclose(cfg.step_size, 2 / 255, rel_tol=1e-12)
    assert cfg.steps == 10 and cfg.norm == "linf"
    # model, method and its options
    assert cfg.model in models.available() or parse_wrn(cfg.model) is not None
    assert cfg.method in methods.available()
    methods.resolve_run_options(cfg.method, cfg.method_opts, cfg.attack_options())  # known keys, valid values
    # schedule inside the run
    assert cfg.schedule == "piecewise" and all(0 < m < cfg.epochs for m in cfg.milestone_epochs())
    # teachers: placeholders naming teacher recipes of this project
    entry = methods.spec(cfg.method)
    if entry.needs_teacher:
        teacher = teacher_recipe(cfg.teacher or "")
        assert teacher.model == TEACHER_ARCH and methods.spec(teacher.method).role == "objective"
        if entry.same_label_space:
            assert num_classes(teacher) == num_classes(cfg)
    else:
        assert cfg.teacher is None
    if entry.needs_natural_teacher:
        natural = teacher_recipe(cfg.natural_teacher or "")
        assert natural.method == "standard" and num_classes(natural) == num_classes(cfg)
    else:
        assert cfg.natural_teacher is None


def build_run(path: Path) -> tuple[RunConfig, data.ArrayDataset, torch.nn.Module, methods.Method]:
    """Data, student and method of a recipe as `train_from_config` builds them, with stand-in teachers."""
    cfg = load_config(path, flags=DRY_RUN)
    info = data.info(cfg.data)
    train = data.synthetic(num_classes(cfg), info["shape"], n=cfg.batch_size, seed=0)
    student_arch = STAND_IN if parse_wrn(cfg.model) is not None else cfg.model
    torch.manual_seed(0)
    student = runs.create_model(student_arch, train, cfg.model_opts)
    entry = methods.spec(cfg.method)
    teacher = natural = None
    same_label_space = True
    if entry.needs_teacher:
        teacher_classes = num_classes(teacher_recipe(cfg.teacher or ""))
        teacher = stand_in_teacher(teacher_classes, "teacher")
        same_label_space = teacher_classes == train.num_classes
    if entry.needs_natural_teacher:
        natural = stand_in_teacher(num_classes(teacher_recipe(cfg.natural_teacher or "")), "natural")
    facts = methods.RunFacts(len(train), student.feature_dim, student.spec, same_label_space)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="gacd: nce_k=", category=UserWarning)  # N = 2 samples here
        method = runs.create_method(cfg, teacher=teacher, natural_teacher=natural, facts=facts)
    return cfg, train, student, method


@pytest.mark.parametrize("path", RECIPES, ids=IDS)
def test_recipe_one_step(path: Path) -> None:
    cfg, train, student, method = build_run(path)
    trainable = [p for p in (*student.parameters(), *method.parameters()) if p.requires_grad]
    optimizer = torch.optim.SGD(
        trainable, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
    )
    scheduler = make_scheduler(
        optimizer,
        steps_per_epoch=1,
        epochs=cfg.epochs,
        schedule=cfg.schedule,
        milestones=cfg.milestone_epochs(),
        gamma=cfg.lr_gamma,
        warmup_epochs=cfg.warmup_epochs,
    )
    loader = data.Loader(train, cfg.batch_size, seed=cfg.seed, augment=runs.augmentation(cfg), drop_last=True)
    assert len(loader) == 1
    x, y, index = next(loader.iterate())
    assert tuple(x.shape) == (2, *data.info(cfg.data)["shape"])
    before = [p.detach().clone() for p in student.parameters()]

    method.on_epoch_start(0)
    student.train()
    method.train()
    terms = method(student, x, y, index)
    optimizer.zero_grad(set_to_none=True)
    terms["loss"].backward()
    optimizer.step()
    scheduler.step()

    assert terms["loss"].ndim == 0 and torch.isfinite(terms["loss"]), f"loss {terms['loss']}"
    assert all(torch.isfinite(p).all() for p in student.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters(), strict=True))
    assert math.isclose(optimizer.param_groups[0]["lr"], cfg.lr)  # epoch 1 is before every milestone


def test_fit_runs_a_recipe(tmp_path: Path) -> None:
    """One recipe end to end through `train.fit`, as `robustdistill distill` runs it."""
    cfg, train, student, method = build_run(CONFIGS / "cifar10" / "rslad-mobilenet-v2.yaml")
    result = fit(
        student, method, train, config=cfg, run_dir=tmp_path, progress=False, augment=runs.augmentation(cfg), epochs=1
    )
    assert result.global_step == 1
    assert math.isfinite(result.history[-1]["train_loss"])
    assert (tmp_path / "model.safetensors").is_file()


@pytest.mark.parametrize("classes", [10, 100])
def test_wrn_34_10_forward(classes: int) -> None:
    """The teachers' real architecture: one forward pass at batch 1 (the dry runs use a stand-in)."""
    torch.manual_seed(0)
    teacher = models.create(TEACHER_ARCH, num_classes=classes).eval()
    assert teacher.feature_dim == 640
    with torch.no_grad():
        logits = teacher(torch.rand(1, 3, 32, 32))
    assert logits.shape == (1, classes) and torch.isfinite(logits).all()
