"""Issue 14: run-directory safety, interrupted runs, non-finite and foreign weights, validation first.

Each test names the case of docs/reliability.md it proves. Runs are tiny (64 digits, 4 steps an
epoch) and go through the real command line in child processes (tests/clirun.py).
"""

from __future__ import annotations

import json
import os
import re
import signal
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
import yaml
from safetensors.torch import save_file

from robustdistill import cli, data, models
from robustdistill.config import load_config
from robustdistill.data.download import extract
from robustdistill.data.images import decode_images
from robustdistill.errors import CheckpointError, ConfigError, DataError, TrainingError
from robustdistill.lock import LOCK_NAME, RunDirLock
from robustdistill.train import fit
from robustdistill.train.checkpoint import list_checkpoints, load_checkpoint
from tests.clirun import SMALL, assert_ok, assert_same_weights, run_cli, start_cli, warm_up
from tests.conftest import tiny_cnn
from tests.test_data import write_mnist

ROOT = Path(__file__).resolve().parents[1]


def teacher_args(run_dir: Path, *extra: str) -> list[str]:
    return ["train-teacher", *SMALL, "--method", "pgd-at", "--run-dir", str(run_dir), *extra]


def files_of(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("warning:")]
    assert len(lines) == 1, stderr
    return lines[0]


def main_code(argv: list[str]) -> int:
    try:
        cli.main(argv)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 1
    return 0


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One finished tiny train-teacher run (its weights, spec, config and checkpoints)."""
    warm_up()
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    assert_ok(run_cli(teacher_args(run_dir, "--epochs", "1")))
    return run_dir


# --- one run per run directory -------------------------------------------------------------------


def test_two_processes_started_together_one_runs_one_is_refused(tmp_path: Path) -> None:
    warm_up()
    run_dir, alone = tmp_path / "shared", tmp_path / "alone"
    args = teacher_args(run_dir, "--epochs", "3")
    first, second = start_cli(args), start_cli(args)
    outcomes = {first.pid: first.wait(), second.pid: second.wait()}
    winners = [pid for pid, o in outcomes.items() if o.code == 0]
    losers = [pid for pid, o in outcomes.items() if o.code != 0]
    assert len(winners) == 1 and len(losers) == 1, {pid: o.stderr for pid, o in outcomes.items()}
    line = error_line(outcomes[losers[0]].stderr)
    assert outcomes[losers[0]].code == 1
    assert f"is in use by another robustdistill process (pid {winners[0]})" in line, line
    # the survivor's files are those of a run that had the directory to itself
    assert_ok(run_cli(teacher_args(alone, "--epochs", "3")))
    assert_same_weights(run_dir / "model.safetensors", alone / "model.safetensors")
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert not (run_dir / LOCK_NAME).exists()


def test_a_held_lock_refuses_at_once_and_changes_nothing(trained: Path) -> None:
    before = files_of(trained)
    lock = RunDirLock(trained).acquire()
    try:
        outcome = run_cli(teacher_args(trained, "--resume", "--epochs", "1"))
    finally:
        lock.release()
    assert outcome.code == 1
    assert f"(pid {os.getpid()})" in error_line(outcome.stderr)
    assert files_of(trained) == before


def test_a_stale_lock_of_a_killed_process_is_taken_over(tmp_path: Path) -> None:
    warm_up()
    run_dir = tmp_path / "run"
    killed = start_cli(teacher_args(run_dir, "--epochs", "50"))
    deadline = time.monotonic() + 60
    while not (run_dir / LOCK_NAME).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)  # past the pid write
    killed.signal(signal.SIGKILL)
    assert killed.wait().killed
    assert (run_dir / LOCK_NAME).read_text().strip() == str(killed.pid)  # left behind by the killed run
    outcome = run_cli(teacher_args(run_dir, "--epochs", "1", "--overwrite"))
    assert_ok(outcome)
    assert not outcome.lines(), outcome.stderr  # taken over without a word ...
    assert not (run_dir / LOCK_NAME).exists()  # ... and removed at the end


# --- interrupted runs are not successes ----------------------------------------------------------


def _interrupt_after_first_checkpoint(args: list[str], run_dir: Path, sig: int, *, real: bool):
    running = start_cli(args, real=real)
    deadline = time.monotonic() + 120
    while not list_checkpoints(run_dir / "checkpoints"):
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.005)
    running.signal(sig)
    return running.wait()


def test_sigint_stops_with_the_resume_line_and_resume_is_bit_identical(tmp_path: Path) -> None:
    warm_up()
    interrupted, reference = tmp_path / "interrupted", tmp_path / "reference"
    epochs = ["--epochs", "5"]
    outcome = _interrupt_after_first_checkpoint(
        teacher_args(interrupted, *epochs), interrupted, signal.SIGINT, real=True
    )
    assert outcome.code == 130, outcome.stderr
    last = outcome.lines()[-1]
    match = re.fullmatch(r"interrupted at epoch (\d+) step (\d+); resume with --resume", last)
    assert match, outcome.stderr
    step = int(match.group(2))
    assert 1 <= step < 20 and not (interrupted / "model.safetensors").exists()
    newest = list_checkpoints(interrupted / "checkpoints")[0]
    assert load_checkpoint(newest)["global_step"] == step  # what is needed to resume was written
    assert_ok(run_cli(teacher_args(interrupted, *epochs, "--resume")))
    assert_ok(run_cli(teacher_args(reference, *epochs)))
    assert_same_weights(interrupted / "model.safetensors", reference / "model.safetensors")


def test_sigterm_exits_143_after_a_checkpoint(tmp_path: Path) -> None:
    warm_up()
    run_dir = tmp_path / "run"
    outcome = _interrupt_after_first_checkpoint(
        teacher_args(run_dir, "--epochs", "50"), run_dir, signal.SIGTERM, real=False
    )
    assert outcome.code == 143, outcome.stderr
    assert re.fullmatch(r"interrupted at epoch \d+ step \d+; resume with --resume", outcome.lines()[-1])


def test_an_exit_code_returned_by_the_cli_framework_is_not_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    def stop(**kwargs: object) -> None:
        raise typer.Exit(code=3)

    monkeypatch.setattr("robustdistill.demo.run_demo", stop)
    assert main_code(["demo", "--size", "tiny"]) == 3


def test_typer_major_version_is_pinned() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'"typer>=[0-9.]+,<1"', text)


# --- results never overwrite inputs --------------------------------------------------------------


def _evaluate(trained: Path, json_path: Path, *extra: str) -> list[str]:
    return ["evaluate", "--checkpoint", str(trained), "--data", "digits", "--n", "8", "--attacks", "clean",
            "--quiet", "--json", str(json_path), *extra]  # fmt: skip


@pytest.mark.parametrize("target", ["model.safetensors", "model.json", "config.yaml", "checkpoint"])
def test_json_result_never_replaces_an_input(trained: Path, target: str, capsys) -> None:
    path = list_checkpoints(trained / "checkpoints")[0] if target == "checkpoint" else trained / target
    before = files_of(trained)
    for extra in ([], ["--overwrite"]):  # --overwrite never applies to the inputs of the same command
        capsys.readouterr()
        assert main_code(_evaluate(trained, path, *extra)) == 1
        assert "is an input of this command" in error_line(capsys.readouterr().err)
    assert files_of(trained) == before


def test_json_result_replaces_only_a_result_record_without_overwrite(trained: Path, tmp_path: Path, capsys) -> None:
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}\n')
    assert main_code(_evaluate(trained, notes)) == 1
    assert "is a file that is not a robustdistill result record" in error_line(capsys.readouterr().err)
    assert notes.read_text() == '{"mine": 1}\n'
    assert main_code(_evaluate(trained, notes, "--overwrite")) == 0
    record = json.loads(notes.read_text())
    assert "accuracy" in record
    assert main_code(_evaluate(trained, notes)) == 0  # a record of ours may be replaced
    other_spec = tmp_path / "spec.json"
    other_spec.write_text((trained / "model.json").read_text())
    assert main_code(_evaluate(trained, other_spec)) == 1
    assert "is a model spec" in capsys.readouterr().err


# --- non-finite models are never saved or silently scored ----------------------------------------


def test_weights_that_become_non_finite_are_never_checkpointed_nor_saved(tmp_path: Path, digits_train) -> None:
    from robustdistill import methods

    class Blowup(methods.base.Method):
        def compute(self, student, x, y, index):
            weight = next(student.parameters())
            return {"loss": 1e38 * torch.tanh(weight.sum())}  # finite; its gradient times lr overflows float32

    sample = data.subset(digits_train, 16, seed=0)
    # the only step's loss is finite, so the loss check passes: only the check of the weights stops it
    with pytest.raises(TrainingError, match=r"model's tensor 'feature_extractor\.conv1\.weight' became non-finite"):
        fit(tiny_cnn(), Blowup(), sample, run_dir=tmp_path, epochs=1, batch_size=16, lr=100.0, schedule="constant",
            momentum=0.0, eval_every=0, progress=False, device="cpu")  # fmt: skip
    assert not (tmp_path / "model.safetensors").exists()
    assert [load_checkpoint(p)["global_step"] for p in list_checkpoints(tmp_path / "checkpoints")] == [0]


@pytest.mark.parametrize(
    "override, message",
    [("lr=inf", "'lr': Input should be a finite number"), ("lr=nan", "'lr': Input should be a finite number"),
     ("lr=1e300", "'lr': Input should be less than or equal to"), ("weight_decay=2", "'weight_decay': Input should"),
     ("weight_decay=inf", "'weight_decay': Input should be a finite"), ("eps=inf", "'eps': Input should be a finite"),
     ("eps=2", "an L-inf eps must be at most 1"), ("momentum=nan", "'momentum': Input should be a finite"),
     ("steps=100000", "'steps': Input should be less than or equal to 1000"),
     ("grad_clip=inf", "'grad_clip': Input should be a finite")],
)  # fmt: skip
def test_configuration_values_must_be_finite_and_in_range(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [override])


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda sd: sd["classifier.fc3.weight"].__setitem__((0, 0), float("nan")), "'classifier.fc3.weight' holds NaN"),
        (lambda sd: sd["feature_extractor.conv1.bias"].__setitem__(0, float("inf")), "conv1.bias' holds NaN or inf"),
        (lambda sd: sd["std"].fill_(0.0), "tensor 'std' (input normalisation) holds a value <= 0"),
        (lambda sd: sd.__setitem__("classifier.fc3.weight", sd["classifier.fc3.weight"].long()), "holds torch.int64"),
    ],
    ids=["nan", "inf", "std-zero", "integer"],
)
def test_loading_refuses_broken_tensors_naming_them(tmp_path: Path, damage, message: str) -> None:
    source = tiny_cnn()
    state = _state(source)
    damage(state)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        models.load_into(tiny_cnn(), state)
    path = tmp_path / "broken.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(CheckpointError, match=re.escape(message)):
        models.load_weights(tiny_cnn(), path)


# --- foreign and tampered specs ------------------------------------------------------------------


def _saved(tmp_path: Path) -> Path:
    path = tmp_path / "model.safetensors"
    models.save(tiny_cnn(), path)
    return path


@pytest.mark.parametrize("name", ["../model.safetensors", "/etc/passwd", "sub/model.safetensors", "", 7])
def test_spec_weights_must_be_a_bare_name_in_the_same_folder(tmp_path: Path, name: object) -> None:
    spec = _saved(tmp_path).with_suffix(".json")
    record = json.loads(spec.read_text())
    record["weights"] = name
    spec.write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="must be a bare file name in the same folder"):
        models.load(spec)


@pytest.mark.parametrize("field, value", [("num_classes", 10**9), ("kwargs", {"width": 4096.0, "hidden": 32})])
def test_a_spec_asking_for_an_impossible_size_is_one_line(tmp_path: Path, field: str, value: object) -> None:
    path = _saved(tmp_path)
    record = json.loads(path.with_suffix(".json").read_text())
    record[field] = value if field != "kwargs" else {**record["kwargs"], **value}
    path.with_suffix(".json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match=r"describes a model of .* values but the weights file holds"):
        models.load(path)


# --- an explicit --data-dir is the only place looked ---------------------------------------------


def test_an_explicit_data_dir_never_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "env"
    write_mnist(elsewhere)
    monkeypatch.setenv("ROBUSTDISTILL_DATA", str(elsewhere))
    assert len(data.load("mnist", "test")) == 6  # found through the environment ...
    with pytest.raises(DataError, match=r"--data-dir '.*missing' does not exist"):
        data.load("mnist", "test", data_dir=tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="only place looked"):  # ... but never behind an explicit --data-dir
        data.load("mnist", "test", data_dir=empty)
    only_train = tmp_path / "only-train"
    write_mnist(only_train)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (only_train / name).unlink()
    assert len(data.load("mnist", "train", data_dir=only_train)) == 6
    with pytest.raises(DataError, match=r"mnist \(test\) not found in --data-dir"):
        data.load("mnist", "test", data_dir=only_train)


def test_the_run_config_records_the_files_of_every_split(tmp_path: Path) -> None:
    warm_up()
    folder = tmp_path / "mnist"
    write_mnist(folder, n=32)
    run_dir = tmp_path / "run"
    args = ["train-teacher", "--data", "mnist", "--data-dir", str(folder), "--method", "standard", "--epochs", "1",
            "--batch-size", "16", "model_opts.width=0.25", "model_opts.hidden=16", "eval_every=0", "--quiet",
            "--run-dir", str(run_dir)]  # fmt: skip
    assert_ok(run_cli(args))
    recorded = yaml.safe_load((run_dir / "config.yaml").read_text())["data_files"]
    assert recorded == {
        "train": [str((folder / f).resolve()) for f in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")],
        "test": [str((folder / f).resolve()) for f in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")],
    }


# --- resume checks identity, not just paths ------------------------------------------------------


def test_resume_with_another_teacher_is_refused(tmp_path: Path) -> None:
    warm_up()
    first, second, student = tmp_path / "t1", tmp_path / "t2", tmp_path / "student"
    for run_dir, seed in ((first, "1"), (second, "2")):
        assert_ok(run_cli(teacher_args(run_dir, "--method", "standard", "--epochs", "1", "--seed", seed)))
    shutil_copy = tmp_path / "t1-copy"  # the same weights under another path are the same teacher
    shutil_copy.mkdir()
    for name in ("model.safetensors", "model.json", "config.yaml"):
        (shutil_copy / name).write_bytes((first / name).read_bytes())
    distill = ["distill", *SMALL, "--method", "kd", "--epochs", "1", "--run-dir", str(student)]
    assert_ok(run_cli([*distill, "--teacher", str(first)]))
    state = load_checkpoint(list_checkpoints(student / "checkpoints")[0])
    assert set(state["teachers"]) == {"teacher"} and len(state["teachers"]["teacher"]) == 64
    before = files_of(student)
    outcome = run_cli([*distill, "--teacher", str(second), "--resume"])
    assert outcome.code == 1
    assert "--resume with a different teacher than the checkpoint" in error_line(outcome.stderr)
    assert files_of(student) == before
    assert_ok(run_cli([*distill, "--teacher", str(shutil_copy), "--resume"]))


# --- validation before side effects --------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, message",
    [(["--eps", "2"], "an L-inf eps must be at most 1"), (["--eps", "inf"], "finite"),
     (["--steps", "100000"], "less than or equal to 1000"), (["--subset", "8"], "fewer than one batch of 16"),
     (["eval_every=1", "eval_attacks=[clean,pgd-5000]"], "'pgd-5000' asks for 5000 steps; at most 1000")],
)  # fmt: skip
def test_invalid_values_create_no_run_directory(tmp_path: Path, extra: list[str], message: str) -> None:
    warm_up()
    run_dir = tmp_path / "runs" / "run"
    outcome = run_cli(teacher_args(run_dir, "--epochs", "1", *extra))
    assert outcome.code == 1 and message in error_line(outcome.stderr), outcome.stderr
    assert not run_dir.parent.exists()
    assert_ok(run_cli(teacher_args(run_dir, "--epochs", "1")))  # the corrected rerun is not blocked


def test_a_large_linf_eps_warns(tmp_path: Path) -> None:
    warm_up()
    outcome = run_cli(teacher_args(tmp_path / "run", "--epochs", "1", "--eps", "0.75"))
    assert_ok(outcome)
    assert any(line.startswith("warning: L-inf eps 0.75 is above 0.5") for line in outcome.lines()), outcome.stderr


def test_evaluate_checks_eps_before_loading_anything(tmp_path: Path, capsys) -> None:
    argv = ["evaluate", "--checkpoint", str(tmp_path / "absent"), "--data", "digits", "--eps", "3"]
    assert main_code(argv) == 1
    assert "an L-inf eps must be at most 1" in capsys.readouterr().err


# --- archives and images -------------------------------------------------------------------------


def test_a_link_inside_a_cifar_archive_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as bundle:
        link = tarfile.TarInfo("cifar-10-batches-py/test_batch")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        bundle.addfile(link)
    with pytest.raises(DataError, match="test_batch is a link or not a regular file"):
        data.load("cifar10", "test", data_dir=tmp_path)


def test_a_link_inside_a_zip_archive_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "bundle.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        info = zipfile.ZipInfo("tiny-imagenet-200/wnids.txt")
        info.external_attr = 0o120777 << 16  # a symbolic link
        bundle.writestr(info, "/etc/passwd")
    with pytest.raises(DataError, match=re.escape("contains the link or device 'tiny-imagenet-200/wnids.txt'")):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "tiny-imagenet-200").exists()


def test_a_decompression_bomb_image_is_one_line_naming_the_file(tmp_path: Path, monkeypatch) -> None:
    from PIL import Image

    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(path)
    for limit in (1000, 600):  # above 2x the limit PIL raises; above the limit it only warns
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        with pytest.raises(DataError, match=f"{re.escape(str(path))} is too large to decode safely"):
            decode_images([path])


def test_an_allocation_failure_in_a_reader_is_one_line(tmp_path: Path, monkeypatch) -> None:
    write_mnist(tmp_path)

    def no_memory(*args: object) -> None:
        raise MemoryError

    monkeypatch.setattr("robustdistill.data.idx.read_mnist", no_memory)
    with pytest.raises(DataError, match="not enough memory to read mnist"):
        data.load("mnist", "test", data_dir=tmp_path)


# --- no generic catch-all messages ---------------------------------------------------------------


@pytest.mark.parametrize(
    "error, line",
    [(PermissionError(13, "Permission denied", "/data/x.gz"), "error: cannot access '/data/x.gz': Permission denied"),
     (MemoryError(), "error: out of memory; lower --batch-size")],
)  # fmt: skip
def test_os_and_memory_errors_are_specific(monkeypatch, capsys, error: BaseException, line: str) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr("robustdistill.runs.train_from_config", fail)
    assert main_code(["train-teacher", "--data", "digits"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(line) and "run with --debug" not in err and len(err.strip().splitlines()) == 1


# --- fidelity ------------------------------------------------------------------------------------


def test_dataset_aliases_get_the_default_eps_of_their_entry() -> None:
    for name in ("fmnist", "fashion_mnist", "FashionMNIST", "mnist", "digits"):
        assert load_config(None, [f"data={name}"]).eps == pytest.approx(0.1), name
    assert load_config(None, ["data=cifar-10"]).eps == pytest.approx(8 / 255)
    assert data.info("fmnist")["default_eps"] == 0.1


def test_docs_name_the_inner_losses_and_step_sizes_of_the_official_code() -> None:
    attacks = (ROOT / "docs" / "attacks.md").read_text()
    rows = {line.split("|")[1].strip(): line.split("|")[3] for line in attacks.splitlines() if line.startswith("| `")}
    assert "MART" in rows['`CrossEntropy()` / `"ce"`'] and "MART" not in rows['`KLToClean()` / `"kl"`']
    teacher = (ROOT / "docs" / "methods" / "teacher-training.md").read_text()
    assert "0.007" in teacher and "YisenWang/MART" in teacher and "yaodongyu/TRADES" in teacher


def _kuangliu_forward(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """kuangliu/pytorch-cifar PreActResNet.forward: conv1, layers, avg_pool2d(4), linear (no final BN)."""
    out = model.conv1(x)
    out = model.layer4(model.layer3(model.layer2(model.layer1(out))))
    return model.fc(torch.nn.functional.avg_pool2d(out, 4).flatten(1))


def test_kuangliu_preact_resnet_checkpoints_load(tmp_path: Path) -> None:
    torch.manual_seed(0)
    donor = models.create("preact-resnet-18", width=0.125, final_bn=False).eval()
    kuangliu = {("linear." + k[3:] if k.startswith("fc.") else k): v for k, v in donor.state_dict().items()}
    kuangliu = {k: v for k, v in kuangliu.items() if k not in ("mean", "std")}  # no normalisation layer there
    assert not any(k.startswith("bn.") for k in kuangliu) and "linear.weight" in kuangliu
    path = tmp_path / "ckpt.pth"
    torch.save({"net": kuangliu, "acc": 90.0, "epoch": 3}, path)
    model = models.load_weights(models.create("preact-resnet-18", width=0.125, final_bn=False), path).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _kuangliu_forward(donor, x))
    with pytest.raises(CheckpointError, match="create the model with final_bn=False"):
        models.load_weights(models.create("preact-resnet-18", width=0.125), path)


def test_the_final_bn_option_survives_save_and_load(tmp_path: Path) -> None:
    model = models.create("preact-resnet-18", width=0.125, final_bn=False)
    models.save(model, tmp_path / "m.safetensors")
    again = models.load(tmp_path / "m.safetensors")
    assert again.bn is None and again.spec["kwargs"]["final_bn"] is False
    with pytest.raises(ConfigError, match="final_bn"):
        models.create("preact-resnet-18", final_bn="no")
