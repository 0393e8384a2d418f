"""Assembling a run from its configuration: data, models, teachers, method, run directory."""

from __future__ import annotations

import contextlib
import shutil
import warnings
from collections.abc import Iterator
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
from robustdistill.evaluate.during_training import EpochEvaluation
from robustdistill.lock import RunDirLock
from robustdistill.methods import Method, RunFacts
from robustdistill.run_dir import RESULT_FILES, is_run_dir
from robustdistill.utils import atomic_write_bytes


@dataclass
class Datasets:
    train: data_lib.ArrayDataset
    val: data_lib.ArrayDataset | None
    test: data_lib.ArrayDataset


def validation_size(cfg: RunConfig, train_size: int) -> int:
    """`val_size`, or by default 10 % of the training split (at most 5000); 0 means no validation split."""
    return data_lib.default_validation_size(train_size) if cfg.val_size is None else cfg.val_size


def load_datasets(cfg: RunConfig) -> Datasets:
    """Train, validation and test splits.

    The validation split is carved from the official training split first (class-balanced, seed 0
    whatever `--seed`, so every seed sees the same one); `subset` then picks the training images from
    the rest and `test_subset` the test images.
    """
    train = data_lib.load(cfg.data, "train", data_dir=cfg.data_dir, download=cfg.download)
    test = data_lib.load(cfg.data, "test", data_dir=cfg.data_dir, download=cfg.download)
    val = None
    size = validation_size(cfg, len(train))
    if size:
        train, val = data_lib.split_validation(train, size)
    cfg.data_files = {split: data_lib.source_files(cfg.data, split, cfg.data_dir) for split in ("train", "test")}
    if cfg.subset is not None and cfg.subset < len(train):
        train = data_lib.subset(train, cfg.subset, seed=cfg.seed)
    if cfg.test_subset is not None and cfg.test_subset < len(test):
        test = data_lib.subset(test, cfg.test_subset, seed=cfg.seed)
    return Datasets(train, val, test)


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
    """A run directory, a weights file or `zoo:NAME` -> the weights file (a run's SWA average first)."""
    path = model_lib.zoo.resolve(path)
    if path.is_dir():
        for name in ("model_swa.safetensors", "model.safetensors", "model_ema.safetensors"):
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
            f"'{weights}' is a plain state dict without the model spec robustdistill needs; as a teacher, name "
            "its architecture with teacher_arch=NAME (for example dm-wrn-28-10 for a RobustBench file); else "
            f"build the model with models.create(...), models.load_weights(model, '{weights}') and "
            "models.save(model, 'model.safetensors'), then pass that file"
        )
    return model_lib.load(weights), weights


def input_files(weights: Path) -> list[Path]:
    """A weights file and what lies next to it that a command reads or must keep: spec, config, checkpoints."""
    folder = weights.parent
    return [
        weights,
        weights.with_suffix(".json"),
        weights.with_suffix(".safetensors"),
        folder / "config.yaml",
        *sorted((folder / "checkpoints").glob("*.ckpt")),
    ]


@contextlib.contextmanager
def lock_if_run_dir(path: Path | None) -> Iterator[None]:
    """Hold the run-directory lock of `path` while writing into it, when it is a run directory."""
    if path is None or not is_run_dir(path):
        yield
        return
    lock = RunDirLock(path).acquire()
    try:
        yield
    finally:
        lock.release()


def load_teacher(path: str | Path) -> nn.Module:
    """A teacher saved by this toolkit (weights + spec, or a run directory), in eval mode."""
    model, _ = load_model(path)
    model.eval()
    return model


def load_foreign_teacher(path: str | Path, arch: str, *, in_channels: int, num_classes: int) -> nn.Module:
    """A teacher from another code base's weights file (RobustBench, TRADES, ...): build `arch`, convert, load.

    The number of classes is the checkpoint's (its final layer), `num_classes` when that is not found;
    the input statistics are the architecture's own (see `models.convert_state_dict`).
    """
    weights = resolve_weights(path)
    raw = model_lib.load_state_dict_file(weights)
    model = model_lib.create(arch, num_classes=num_classes, in_channels=in_channels)
    try:
        head = model_lib.convert_state_dict(raw, target_model=model).get(f"{model.head_key()}.weight")
        if head is not None and head.dim() == 2 and head.shape[0] != num_classes:
            model = model_lib.create(arch, num_classes=int(head.shape[0]), in_channels=in_channels)
        model_lib.load_into(model, model_lib.convert_state_dict(raw, target_model=model))
    except CheckpointError as error:
        raise CheckpointError(f"{weights} as teacher_arch={arch}: {error}") from None
    return model.eval()


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
    try:
        path = model_lib.zoo.resolve(path)
    except ConfigError:
        return None
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
    if not method_lib.spec(method).same_label_space:
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
    cfg: RunConfig,
    *,
    teacher: nn.Module | None = None,
    natural_teacher: nn.Module | None = None,
    facts: RunFacts = RunFacts(),
) -> Method[Any]:
    """The configured method: `method_opts` over its defaults, its attack at the run's eps/step_size/steps/norm.

    A `method_opts` entry for one of those four is refused (`methods.resolve_run_options`): one eps per run.
    """
    options = method_lib.resolve_run_options(cfg.method, cfg.method_opts, cfg.attack_options())
    return method_lib.spec(cfg.method).build(options, teacher=teacher, natural_teacher=natural_teacher, facts=facts)


def prepare_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> RunDirLock:
    """Create and lock `run_dir`; refuse to clobber a finished or started run unless told to resume or overwrite.

    The returned lock is held: release it when the run ends. The results check runs under the lock,
    so a second process aimed at the same directory is refused with the holder's pid instead.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--run-dir '{run_dir}' is a file, not a directory; choose another --run-dir")
    if resume and not (run_dir / "checkpoints").is_dir():
        raise ConfigError(f"--resume: '{run_dir}' has no checkpoints to resume from")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create the run directory '{run_dir}': {error.strerror or error}") from None
    lock = RunDirLock(run_dir).acquire()
    try:
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
    except BaseException:
        lock.release()
        raise
    return lock


def sanity_check_teacher(teacher: nn.Module, held_out: data_lib.ArrayDataset) -> float:
    """Warn when a teacher is near chance on a few held-out batches (a wrong or broken checkpoint)."""
    from robustdistill.evaluate import attack_suite

    record = attack_suite(teacher, held_out, attacks=["clean"], eps=1.0, n=min(256, len(held_out)), progress=False)
    clean = record["accuracy"]["clean"]
    if clean < 1.5 / held_out.num_classes:
        warnings.warn(
            f"the teacher's clean accuracy on {record['n_examples']} {held_out.split} images is {100 * clean:.1f}%, "
            "near chance: is it the right checkpoint for this dataset?",
            stacklevel=2,
        )
    return clean


def train_from_config(command: str, cfg: RunConfig, *, resume: bool = False, quiet: bool = False) -> Path:
    """Run `train-teacher` or `distill` from a validated configuration; returns the run directory.

    Everything cheap is validated (data, models, teachers, method options) before the run
    directory is touched, so a bad input never damages earlier results.
    """
    from robustdistill.config import warn_large_eps
    from robustdistill.evaluate.suite import parse_attacks
    from robustdistill.runtime import distributed as dist
    from robustdistill.utils import resolve_device, seed_everything

    warn_large_eps(cfg.resolved_eps(), cfg.norm)
    dist.init_from_env("gloo" if cfg.device == "cpu" else None)  # under torchrun: gloo on CPU, nccl on GPU
    run_dir = cfg.run_path(f"{command}-{cfg.method}-{cfg.model}-{cfg.data}")
    if not dist.is_initialized():
        resolve_device(cfg.device)  # an unknown or absent device is refused before anything is written
    datasets = load_datasets(cfg)
    seed_everything(cfg.seed)  # the initial weights (student, method heads, memory banks) follow --seed
    student = create_model(cfg.model, datasets.train, cfg.model_opts)
    teacher = natural = None
    same_label_space, student_dim = True, None
    if command == "distill":
        if method_lib.spec(cfg.method).needs_teacher and not cfg.teacher:
            raise ConfigError(f"method '{cfg.method}' needs a teacher: pass --teacher PATH")
        student_data = str(data_lib.info(cfg.data)["name"])

        def attach(path: str, role: str, arch: str | None = None) -> tuple[nn.Module, bool]:
            if arch is None:
                model = load_teacher(path)
            else:
                channels, classes = int(datasets.train.images.shape[1]), datasets.train.num_classes
                model = load_foreign_teacher(path, arch, in_channels=channels, num_classes=classes)
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
            teacher, same_label_space = attach(cfg.teacher, "teacher", cfg.teacher_arch)
        if cfg.natural_teacher:
            natural = attach(cfg.natural_teacher, "natural teacher")[0]
        student_dim = int(getattr(student, "feature_dim", 0)) or None
    facts = RunFacts(
        num_samples=len(datasets.train),  # memory banks and perturbation banks: one slot per sample
        student_dim=student_dim,
        student_spec=getattr(student, "spec", None),  # peeraid builds its peer from it
        same_label_space=same_label_space,
    )
    method = create_method(cfg, teacher=teacher, natural_teacher=natural, facts=facts)
    cfg.method_options = method.options.to_dict()  # what trains, recorded in config.yaml and the checkpoints
    check_batches(cfg, datasets.train)
    if cfg.eval_every:  # the evaluation at the end of epoch 1 must not be the first to find a bad name
        parse_attacks(cfg.eval_attacks)
    lock = prepare_run_dir(run_dir, resume=resume, overwrite=cfg.overwrite) if dist.is_main() else None
    try:
        if dist.is_main() and not resume:  # a resumed run keeps the configuration it began with
            atomic_write_bytes(run_dir / "config.yaml", cfg.to_yaml().encode())
        dist.barrier()
        _train_in(command, run_dir, cfg, student, method, datasets, teacher, resume=resume, quiet=quiet)
    finally:
        if lock is not None:
            lock.release()
    return run_dir


def check_batches(cfg: RunConfig, train: data_lib.ArrayDataset) -> None:
    """Refuse, before anything is written, a training set smaller than one (global) batch."""
    if len(train) < cfg.batch_size:
        raise ConfigError(
            f"the training set has {len(train)} samples, fewer than one batch of {cfg.batch_size}; "
            "lower --batch-size or raise --subset"
        )


def epoch_evaluation(cfg: RunConfig, data: data_lib.ArrayDataset | None) -> EpochEvaluation | None:
    """The evaluation `fit` runs every `eval_every` epochs: `eval_n` fixed images of `data` under `eval_attacks`."""
    if data is None:
        return None
    return EpochEvaluation(
        data,
        attacks=tuple(cfg.eval_attacks),
        eps=cfg.resolved_eps(),
        n=cfg.eval_n,
        batch_size=max(cfg.batch_size, 256),
        seed=cfg.seed,
    )


def _train_in(
    command: str,
    run_dir: Path,
    cfg: RunConfig,
    student: nn.Module,
    method: Method,
    datasets: Datasets,
    teacher: nn.Module | None,
    *,
    resume: bool,
    quiet: bool,
) -> None:
    from rich.console import Console

    from robustdistill.runtime import distributed as dist
    from robustdistill.train import fit

    console = Console(stderr=True)
    if not quiet and dist.is_main():
        held_out = (
            f"{len(datasets.val)} validation images for the per-epoch evaluation"
            if datasets.val is not None
            else "no validation split: no per-epoch evaluation"
        )
        console.print(
            f"[bold]{command}[/]: {cfg.method} on {cfg.data} ({len(datasets.train)} train images, {held_out}), "
            f"model {cfg.model}, eps {cfg.resolved_eps():.4g}, {cfg.epochs} epochs -> {run_dir}"
        )
    if teacher is not None and method.facts.same_label_space and dist.is_main():
        sanity_check_teacher(teacher, datasets.val if datasets.val is not None else datasets.test)
    fit(
        student,
        method,
        datasets.train,
        config=cfg,
        run_dir=run_dir,
        evaluation=epoch_evaluation(cfg, datasets.val),
        resume=resume,
        progress=not quiet,
        augment=augmentation(cfg),
    )
    if resume and dist.is_main() and not (run_dir / "config.yaml").is_file():
        atomic_write_bytes(run_dir / "config.yaml", cfg.to_yaml().encode())
    if not quiet and dist.is_main():
        console.print(f"done: weights in {run_dir / 'model.safetensors'}, metrics in {run_dir / 'metrics.jsonl'}")
