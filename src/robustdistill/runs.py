"""Assembling a run from its configuration: data, models, teachers, method, run directory."""

from __future__ import annotations

import inspect
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from robustdistill import data as data_lib
from robustdistill import methods as method_lib
from robustdistill import models as model_lib
from robustdistill.config import RunConfig
from robustdistill.errors import CheckpointError, ConfigError, DataError
from robustdistill.methods.base import Method

RESULT_FILES = (
    "model.safetensors",
    "model.json",
    "model_ema.safetensors",
    "model_ema.json",
    "metrics.jsonl",
    "checkpoints",
    "results.json",
    "tensorboard",
)


@dataclass
class Datasets:
    train: data_lib.ArrayDataset
    test: data_lib.ArrayDataset


def load_datasets(cfg: RunConfig) -> Datasets:
    """Train and test splits, each cut to its class-balanced subset when asked."""
    train = data_lib.load(cfg.data, "train", data_dir=cfg.data_dir, download=cfg.download)
    test = data_lib.load(cfg.data, "test", data_dir=cfg.data_dir, download=cfg.download)
    if cfg.subset is not None and cfg.subset < len(train):
        train = data_lib.subset(train, cfg.subset, seed=cfg.seed)
    if cfg.test_subset is not None and cfg.test_subset < len(test):
        test = data_lib.subset(test, cfg.test_subset, seed=cfg.seed)
    return Datasets(train, test)


def augmentation(cfg: RunConfig) -> dict[str, Any] | None:
    """The dataset's default augmentation (random crop with padding, flips where they make sense)."""
    if not cfg.augment:
        return None
    return data_lib.info(cfg.data).get("augment")


def create_model(name: str, dataset: data_lib.ArrayDataset, options: dict[str, Any]) -> nn.Module:
    """A fresh model sized for `dataset`, with the dataset's normalisation inside."""
    image = dataset.images.shape[1:]
    return model_lib.create(
        name,
        num_classes=dataset.num_classes,
        in_channels=int(image[0]),
        mean=list(dataset.mean),
        std=list(dataset.std),
        **options,
    )


def resolve_weights(path: str | Path) -> Path:
    """A run directory or a weights file -> the weights file."""
    path = Path(path)
    if path.is_dir():
        for name in ("model.safetensors", "model_ema.safetensors"):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"run directory '{path}' holds no model.safetensors; did its training finish?")
    if not path.exists():
        raise CheckpointError(f"model file '{path}' does not exist")
    return path


def load_model(path: str | Path) -> tuple[nn.Module, Path]:
    """A model saved by robustdistill (run directory, `.safetensors` or its `.json`), and its weights file.

    Nothing is ever unpickled: a `.pt`/`.pth`/other file is only opened with `weights_only=True`, so
    one that needs pickle code is refused with the way to convert a trusted file; a plain state
    dict is refused too, since it does not say which architecture to build.
    """
    weights = resolve_weights(path)
    if weights.suffix not in (".safetensors", ".json"):
        model_lib.load_state_dict_file(weights)  # raises CheckpointError for pickle code or damage
        raise CheckpointError(
            f"'{weights}' is a plain state dict without the model spec robustdistill needs; build the model "
            f"with models.create(...), models.load_weights(model, '{weights}') and models.save(model, "
            "'model.safetensors'), then pass that file"
        )
    return model_lib.load(weights), weights


def load_teacher(path: str | Path, role: str = "teacher") -> nn.Module:
    model, _ = load_model(path)
    model.eval()
    return model


def check_input_channels(model: nn.Module, dataset: data_lib.ArrayDataset, role: str) -> None:
    """Refuse a model built for another number of input channels (it would broadcast, not fail)."""
    expected = int(dataset.images.shape[1])
    channels = getattr(model, "spec", {}).get("in_channels")
    if channels is not None and int(channels) != expected:
        raise ConfigError(
            f"the {role} takes {channels}-channel images but '{dataset.name}' has {expected}-channel images; "
            "use a model trained on data with the same number of channels"
        )


def trained_on(path: str | Path) -> str | None:
    """The dataset a model was trained on, from the `config.yaml` of its run directory (None if unknown)."""
    path = Path(path)
    config = path / "config.yaml" if path.is_dir() else path.parent / "config.yaml"
    try:
        name = yaml.safe_load(config.read_text()).get("data")
        return str(data_lib.info(name)["name"])
    except (OSError, AttributeError, yaml.YAMLError, DataError, ConfigError, TypeError):
        return None


def check_label_space(
    teacher: nn.Module,
    num_classes: int,
    method: str,
    role: str = "teacher",
    *,
    teacher_data: str | None = None,
    student_data: str | None = None,
) -> bool:
    """True when teacher and student share the label space; refuses when the method needs that.

    Equal class counts are not enough when the teacher's run directory says it was trained on
    another dataset (`teacher_data` != `student_data`): that is cross-task transfer too.
    """
    teacher_classes = int(getattr(teacher, "spec", {}).get("num_classes", -1))
    same_classes = teacher_classes == num_classes
    other_task = teacher_data is not None and student_data is not None and teacher_data != student_data
    if same_classes and not other_task:
        return True
    if same_classes:
        reason = f"the {role} was trained on {teacher_data} and the student on {student_data}"
    else:
        reason = f"the {role} has {teacher_classes} classes but the student's data has {num_classes}"
    if not method_lib.method_class(method).same_label_space:
        warnings.warn(
            f"{reason}: cross-task transfer, only features are matched and confidence reweighting is off",
            stacklevel=2,
        )
        return False
    if not same_classes:
        raise ConfigError(
            f"{reason}; method '{method}' matches soft labels and needs the same classes "
            "(gacd can transfer across tasks)"
        )
    warnings.warn(
        f"{reason}; method '{method}' matches soft labels, which assumes both use the same classes in the same order",
        stacklevel=2,
    )
    return True


def create_method(
    cfg: RunConfig, *, teacher: nn.Module | None = None, natural_teacher: nn.Module | None = None, **extra: Any
) -> Method:
    """The configured method; the run's eps/step_size/steps/norm fill options the method accepts."""
    cls = method_lib.method_class(cfg.method)
    accepted = inspect.signature(cls.__init__).parameters
    options: dict[str, Any] = {k: v for k, v in cfg.attack_options().items() if k in accepted and v is not None}
    options.update({k: v for k, v in extra.items() if k in accepted})
    options.update(cfg.method_opts)
    return method_lib.create(cfg.method, teacher=teacher, natural_teacher=natural_teacher, **options)


def prepare_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber a finished or started run unless told to resume or overwrite."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--run-dir '{run_dir}' is a file, not a directory; choose another --run-dir")
    existing = [name for name in RESULT_FILES if (run_dir / name).exists()]
    if existing and not resume:
        if not overwrite:
            raise ConfigError(
                f"run directory '{run_dir}' already holds results ({', '.join(existing)}); "
                "pass --resume to continue it, --overwrite to replace it, or choose another --run-dir"
            )
        for name in existing:
            target = run_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink()
    if resume and not (run_dir / "checkpoints").is_dir():
        raise ConfigError(f"--resume: '{run_dir}' has no checkpoints to resume from")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create the run directory '{run_dir}': {error.strerror or error}") from None


def sanity_check_teacher(teacher: nn.Module, test: data_lib.ArrayDataset) -> float:
    """Warn when a teacher is near chance on a few test batches (a wrong or broken checkpoint)."""
    from robustdistill.evaluate import run

    record = run(teacher, test, attacks=["clean"], eps=1.0, n=min(256, len(test)), progress=False)
    clean = record["accuracy"]["clean"]
    if clean < 1.5 / test.num_classes:
        warnings.warn(
            f"the teacher's clean accuracy on {record['n_examples']} test images is {100 * clean:.1f}%, "
            "near chance: is it the right checkpoint for this dataset?",
            stacklevel=2,
        )
    return clean


def train_from_config(command: str, cfg: RunConfig, *, resume: bool = False, quiet: bool = False) -> Path:
    """Run `train-teacher` or `distill` from a validated configuration; returns the run directory.

    Everything cheap is validated (data, models, teachers, method options) before the run
    directory is touched, so a bad input never damages earlier results.
    """
    from rich.console import Console

    from robustdistill.train import distributed as dist
    from robustdistill.train import fit
    from robustdistill.utils import resolve_device, seed_everything

    console = Console(stderr=True)
    dist.init_from_env("gloo" if cfg.device == "cpu" else None)  # under torchrun: gloo on CPU, nccl on GPU
    run_dir = cfg.run_path(f"{command}-{cfg.method}-{cfg.model}-{cfg.data}")
    if not dist.is_initialized():
        resolve_device(cfg.device)  # an unknown or absent device is refused before anything is written
    datasets = load_datasets(cfg)
    seed_everything(cfg.seed)  # the initial weights (student, method heads, memory banks) follow --seed
    student = create_model(cfg.model, datasets.train, cfg.model_opts)
    teacher = natural = None
    extra: dict[str, Any] = {}
    if command == "distill":
        cls = method_lib.method_class(cfg.method)
        if cls.needs_teacher and not cfg.teacher:
            raise ConfigError(f"method '{cfg.method}' needs a teacher: pass --teacher PATH")
        student_data = str(data_lib.info(cfg.data)["name"])

        def attach(path: str, role: str) -> tuple[nn.Module, bool]:
            model = load_teacher(path, role)
            check_input_channels(model, datasets.train, role)
            same = check_label_space(
                model,
                datasets.train.num_classes,
                cfg.method,
                role,
                teacher_data=trained_on(path),
                student_data=student_data,
            )
            return model, same

        if cfg.teacher:
            teacher, extra["same_label_space"] = attach(cfg.teacher, "teacher")
        if cfg.natural_teacher:
            natural = attach(cfg.natural_teacher, "natural teacher")[0]
        extra["student_dim"] = int(getattr(student, "feature_dim", 0)) or None
    extra["num_samples"] = len(datasets.train)  # memory banks and perturbation banks: one slot per sample
    method = create_method(cfg, teacher=teacher, natural_teacher=natural, **extra)
    if dist.is_main():
        prepare_run_dir(run_dir, resume=resume, overwrite=cfg.overwrite)
        if not resume:  # a resumed run keeps the configuration it began with (checked against its checkpoint)
            (run_dir / "config.yaml").write_text(cfg.to_yaml())
    dist.barrier()
    if not quiet and dist.is_main():
        console.print(
            f"[bold]{command}[/]: {cfg.method} on {cfg.data} ({len(datasets.train)} train images), "
            f"model {cfg.model}, eps {cfg.resolved_eps():.4g}, {cfg.epochs} epochs -> {run_dir}"
        )
    same_labels = cfg.method_opts.get("same_label_space", extra.get("same_label_space", True))
    if teacher is not None and same_labels and dist.is_main():
        sanity_check_teacher(teacher, datasets.test)
    fit(
        student,
        method,
        datasets.train,
        config=cfg,
        run_dir=run_dir,
        eval_data=datasets.test,
        resume=resume,
        progress=not quiet,
        augment=augmentation(cfg),
    )
    if resume and dist.is_main() and not (run_dir / "config.yaml").is_file():
        (run_dir / "config.yaml").write_text(cfg.to_yaml())
    if not quiet and dist.is_main():
        console.print(f"done: weights in {run_dir / 'model.safetensors'}, metrics in {run_dir / 'metrics.jsonl'}")
    return run_dir
