"""Distributed training (DDP, gloo, CPU): two processes with global batch 2B train exactly like one.

The global batch is `batch_size`; each of the `world` ranks takes its slice of every global batch,
DDP averages the student's gradients, the attacks' random starts come from a per-step stream
sliced by rank, and so a 2-process run gives the losses and final weights of a 1-process run at
the same global batch (to float rounding). Resuming under DDP continues the uninterrupted run.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp

from robustdistill import data, methods, models
from robustdistill.attacks.randomness import batch_noise, shared_random_starts
from robustdistill.errors import ConfigError
from robustdistill.runtime import distributed as dist
from robustdistill.train import fit

pytestmark = pytest.mark.skipif(not torch_dist.is_available(), reason="torch.distributed is not available")

TOL = 1e-5
WORLD = 2
GLOBAL_BATCH = 32

# Methods whose every random draw is per sample of the global batch: bitwise the single-process run
# (up to float rounding). `paths` (two concatenated branches, random targets from each rank's own
# stream) and `gacd` (NCE negatives drawn per rank) are only checked to run and to keep the ranks'
# weights identical; for `gacd` also its memory bank, which every rank updates with every rank's slots;
# `paths-share` (share_forward) must also give the weights of `paths` under DDP.
EXACT = ("standard", "trades", "mart", "kd", "ard", "iad", "rslad", "adaad", "mtard")
RUNS_ONLY = ("paths", "paths-share", "gacd")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tiny(seed: int, *, teacher: bool = False) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = models.create("smallcnn", num_classes=10, in_channels=1, width=0.25, hidden=32, dropout=0.0)
    if teacher:  # SmallCNN's last layer starts at zero: a teacher needs opinions to distil
        torch.nn.init.normal_(model.fc.weight, std=1.0)
    return model


def _train_data() -> data.ArrayDataset:
    return data.subset(data.load("digits", "train"), 2 * GLOBAL_BATCH, seed=0)


def _fit_method(name: str, run_dir: Path) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """Two steps of `name` at global batch GLOBAL_BATCH (whatever the number of processes)."""
    train = _train_data()
    student = _tiny(0)
    options: dict = {}
    if name not in ("standard", "trades", "mart"):
        options["teacher"] = _tiny(1, teacher=True)
    if name == "mtard":
        options["natural_teacher"] = _tiny(2, teacher=True)
    if name not in ("standard", "kd"):
        options.update(eps=0.1, steps=2)
    if name == "iad":
        options["warmup_epochs"] = 0  # the introspection term on from the first step
    if name == "gacd":
        options.update(student_dim=32, num_samples=len(train), nce_k=16, feat_dim=8)
    if name == "paths-share":  # the attack's forwards reused by the alignment, through DDP's one forward
        name, options["share_forward"] = "paths", True
    torch.manual_seed(3)
    method = methods.create(name, **options)
    initial_bank = method.memory.teacher.clone() if name == "gacd" else None
    result = fit(
        student,
        method,
        train,
        run_dir=run_dir,
        progress=False,
        epochs=1,
        batch_size=GLOBAL_BATCH,
        lr=0.05,
        schedule="constant",
        augment={"padding": 1, "flip": False},
    )
    weights = {k: v.detach().clone() for k, v in student.state_dict().items()}
    if initial_bank is not None:  # the bank must be identical on every rank, like the weights
        bank = method.memory
        weights.update({"bank.teacher": bank.teacher.clone(), "bank.student": bank.student.clone()})
        weights.update({"bank.log_z": bank.log_z.clone()})
        weights["bank.slots_never_updated"] = (bank.teacher == initial_bank).all(dim=1).sum().double()
    return result.history, weights


def _fit_reuse(run_dir: Path) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """Two epochs of `ard` with perturbation reuse: the second epoch starts from the first's bank."""
    train = _train_data()
    torch.manual_seed(3)
    method = methods.create(
        "ard", teacher=_tiny(1, teacher=True), eps=0.1, steps=2, reuse_steps=1, num_samples=len(train)
    )
    student = _tiny(0)
    result = fit(
        student,
        method,
        train,
        run_dir=run_dir,
        progress=False,
        epochs=2,
        batch_size=GLOBAL_BATCH,
        lr=0.05,
        schedule="constant",
        augment={"padding": 1, "flip": False},
    )
    weights = {k: v.detach().clone() for k, v in student.state_dict().items()}
    bank = method.attack.bank
    weights.update({"bank.delta": bank.delta.clone(), "bank.seen": bank.seen.double()})
    return result.history, weights


def _worker(rank: int, port: int, out: str) -> None:
    """One rank of the spawned gloo group: every method in turn, results to `out/rank{r}.pt`."""
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD))
    torch_dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        results = {name: _fit_method(name, Path(out) / name) for name in (*EXACT, *RUNS_ONLY)}
        results["ard-reuse"] = _fit_reuse(Path(out) / "ard-reuse")
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        torch_dist.destroy_process_group()


def _compare_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str) -> None:
    assert a.keys() == b.keys()
    for key in a:
        difference = (a[key].double() - b[key].double()).abs().max().item()
        assert difference <= TOL, f"{what}: '{key}' differs by {difference:.3g}"


# ---------------------------------------------------------------------------------- unit level


def test_batch_size_is_the_global_batch_and_must_divide():
    assert dist.per_rank_batch(128, 4) == 32
    assert dist.per_rank_batch(128, 1) == 128
    with pytest.raises(ConfigError, match="divisible by the 3 processes"):
        dist.per_rank_batch(128, 3)


def test_shared_random_starts_slice_the_global_draw():
    """The union of the ranks' starts is the one-process start of the whole global batch."""
    shape = (6, 1, 4, 4)
    with shared_random_starts(7):
        whole = batch_noise("uniform", shape, device=torch.device("cpu"), dtype=torch.float32)
        again = batch_noise("normal", (6,), device=torch.device("cpu"), dtype=torch.float32)
    parts, normals = [], []
    for rank in range(3):
        with shared_random_starts(7, rank=rank, world_size=3):
            parts.append(batch_noise("uniform", (2, 1, 4, 4), device=torch.device("cpu"), dtype=torch.float32))
            normals.append(batch_noise("normal", (2,), device=torch.device("cpu"), dtype=torch.float32))
    assert torch.equal(torch.cat(parts), whole)
    assert torch.equal(torch.cat(normals), again)
    # outside the context: the global generator, as before
    torch.manual_seed(0)
    plain = batch_noise("uniform", shape, device=torch.device("cpu"), dtype=torch.float32)
    torch.manual_seed(0)
    assert torch.equal(plain, torch.rand(shape))


# ---------------------------------------------------------------------------------- two processes


def test_two_gloo_processes_train_like_one_for_every_method(tmp_path):
    """Spawned 2-rank gloo group, global batch 32: losses and final weights of the 1-process run."""
    port = _free_port()
    mp.start_processes(_worker, args=(port, str(tmp_path)), nprocs=WORLD, start_method="spawn", join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    for name in (*EXACT, *RUNS_ONLY):
        _compare_weights(ranks[0][name][1], ranks[1][name][1], f"{name}: rank 0 vs rank 1")
    _compare_weights(ranks[0]["paths"][1], ranks[0]["paths-share"][1], "paths: share_forward vs separate passes")
    # Per-epoch diagnostics are averaged over the ranks' shards: every rank logs the same values.
    diagnostics = [{k: v for k, v in r["paths"][0][0].items() if k.startswith("paths/")} for r in ranks]
    assert diagnostics[0] and diagnostics[0].keys() == diagnostics[1].keys()
    for key, value in diagnostics[0].items():
        assert abs(diagnostics[1][key] - value) <= TOL, f"paths: {key} differs between the ranks"
    # One epoch visits every training sample once over both ranks: every slot of each rank's bank moved.
    assert ranks[0]["gacd"][1]["bank.slots_never_updated"].item() == 0
    assert torch.isfinite(ranks[0]["gacd"][1]["bank.log_z"]).all()
    for name in EXACT:
        history, weights = _fit_method(name, tmp_path / "single" / name)
        ddp_history, ddp_weights = ranks[0][name]
        assert len(history) == len(ddp_history) == 1
        for key, value in history[0].items():
            if key.startswith("train_"):
                assert abs(ddp_history[0][key] - value) <= TOL, f"{name}: {key} {ddp_history[0][key]} vs {value}"
        _compare_weights(weights, ddp_weights, f"{name}: 2 processes vs 1")
        initial = _tiny(0).state_dict()
        moved = max((weights[k] - initial[k]).abs().max().item() for k in weights)
        assert moved > 1e-3, f"{name}: the weights did not move, the comparison would be empty"
    # Perturbation reuse: each rank stores every rank's slots, so both banks hold every sample, equal
    # to the one process's bank; the second epoch (reused starts, fewer steps) trains like one process.
    _compare_weights(ranks[0]["ard-reuse"][1], ranks[1]["ard-reuse"][1], "ard-reuse: rank 0 vs rank 1")
    assert ranks[0]["ard-reuse"][1]["bank.seen"].all()
    _, single = _fit_reuse(tmp_path / "single" / "ard-reuse")
    _compare_weights(single, ranks[0]["ard-reuse"][1], "ard-reuse: 2 processes vs 1")


def _cli(args: list[str], run_dir: Path, *, processes: int, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = (
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={processes}",
            "--master_addr=127.0.0.1",
            f"--master_port={_free_port()}",
            "-m",
            "robustdistill",
        ]
        if processes > 1
        else [sys.executable, "-m", "robustdistill"]
    )
    command = [*launcher, "train-teacher", *args, "--run-dir", str(run_dir), "--quiet", *extra]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def _epochs(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if record.get("kind") == "epoch"]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return models.load(run_dir / "model.safetensors").state_dict()


def test_torchrun_distill_cli_equals_one_process_and_resumes(tmp_path):
    """`torchrun --nproc_per_node=2 -m robustdistill train-teacher` (pgd-at, gloo) = one process; then
    the DDP run resumed from a mid-epoch checkpoint ends with the weights of the uninterrupted one."""
    args = [
        "--data", "digits", "--model", "smallcnn", "--method", "pgd-at", "--epochs", "2", "--batch-size", "32",
        "--subset", "96", "--test-subset", "40", "--steps", "2", "--lr", "0.05", "--device", "cpu",
        "model_opts.width=0.25", "model_opts.hidden=32", "model_opts.dropout=0", "schedule=constant",
        "eval_attacks=[clean]", "checkpoint_every=2", "keep_checkpoints=10",
    ]  # fmt: skip
    single, ddp, resumed = tmp_path / "single", tmp_path / "ddp", tmp_path / "resumed"
    _cli(args, single, processes=1)
    _cli(args, ddp, processes=WORLD)

    one, two = _epochs(single), _epochs(ddp)
    assert [r["step"] for r in one] == [r["step"] for r in two] == [3, 6]  # 96 / 32 global batches per epoch
    for a, b in zip(one, two, strict=True):
        for key in ("train_loss", "train_acc_adv", "eval_clean"):
            assert abs(a[key] - b[key]) <= TOL, f"{key}: {a[key]} (1 process) vs {b[key]} (2 processes)"
    _compare_weights(_weights(single), _weights(ddp), "torchrun 2 processes vs 1")

    # interrupt: keep the checkpoints up to step 2 (mid-epoch 1), drop everything written after it
    resumed.mkdir()
    for item in ("config.yaml", "metrics.jsonl"):
        (resumed / item).write_bytes((ddp / item).read_bytes())
    (resumed / "checkpoints").mkdir()
    kept = [p for p in sorted((ddp / "checkpoints").glob("step-*.ckpt")) if int(p.stem.split("-")[1]) <= 2]
    assert [int(p.stem.split("-")[1]) for p in kept] == [0, 2]
    for path in kept:
        (resumed / "checkpoints" / path.name).write_bytes(path.read_bytes())
    _cli(args, resumed, processes=WORLD, extra=("--resume",))
    _compare_weights(_weights(ddp), _weights(resumed), "DDP resumed vs uninterrupted")
    again = _epochs(resumed)
    assert [r["train_loss"] for r in again] == pytest.approx([r["train_loss"] for r in two], abs=TOL)
