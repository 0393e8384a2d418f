"""Random configurations and random corrupt dataset files fed to the command line (in-process).

Every example either succeeds, or exits non-zero with exactly one line `error: ...` on stderr
(lines `warning: ...` aside) that is a checked, explained error (never the generic
"run with --debug" fallback, never a traceback); and a run directory that already holds
results is byte-identical afterwards unless `--overwrite` was given.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from robustdistill import cli
from robustdistill.config import RunConfig
from tests.clirun import warm_up

FIELDS = list(RunConfig.model_fields)
GARBAGE_KEYS = ["epoch", "learning_rate", "batch-sise", "stepz", "foo.bar", "data.x", "lr.x", "ünï", "[x]", " "]

# Keys whose valid values could make a run slow draw from small pools (valid-and-cheap or invalid);
# keys that would reach the network or another file system are left out (download=true).
BOUNDED: dict[str, list] = {
    "epochs": [1, 0, -1, "two", 1.5, [1]],
    "batch_size": [16, 8, 0, -4, "x", 100000],
    "subset": [32, 24, 0, -3, "x", 1],
    "test_subset": [16, 0, "x"],
    "steps": [1, 2, 0, -1, "many"],
    "eval_every": [0, 1, -1, "x"],
    "eval_n": [8, 0, -2, "x"],
    "eval_attacks": [["clean"], ["clean", "fgsm"], ["nonsense"], "clean", 5],
    "download": [False, "maybe", 3],
    "model": ["smallcnn", "SmallCNN", "nonsense", "wrn-3-2", "resnet-999", 7],
    "model_opts": [5, "x", [1]],
    "data": ["digits", "mnist", "fashion-mnist", "cifar10", "nonsense", ""],
    "run_dir": ["elsewhere"],
    "name": ["x", 5],
    "teacher": ["missing-dir", 3],
    "seed": [-5, 2**40, 7, "x"],
    "channels_last": ["on", "off", "auto", "sideways"],
    "amp": ["off", "bf16", "on", 1],
    "natural_teacher": ["missing-dir"],
}
MODEL_OPTS = {
    "width": [0.25, 0, -1, "x", None],
    "hidden": [16, 0, -2, "many"],
    "dropout": [0, 0.5, 1.5, -0.1],
    "nonsense": [1],
}
METHOD_OPTS = {
    "tau": [1.0, 0, -1, "x"],
    "alpha": [0.5, 2.0, -1],
    "beta": [1.0, -3, "x"],
    "estimator": ["nce", "infonce", "bogus"],
    "nce_k": [8, 0, 10**9],
    "warmup_epochs": [0, -1],
    "nonsense": [1],
}
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=10)
ANY_VALUE = st.one_of(
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    TEXT,
    st.lists(st.integers(-3, 3), max_size=3),
    st.sampled_from(["nan", "inf", "-inf", "1e400", "[1, 2]", "{a: 1}", "[/bold]", "none", "0x10", "{", "'"]),
)
DISTILL_METHODS = ["rslad", "kd", "ard", "iad", "adaad", "mtard", "gacd", "paths"]
IDX_MODES = ["valid", "valid-gz", "random", "truncated", "bad-magic", "label-out-of-range", "count-mismatch",
             "empty", "gz-truncated", "missing", "wrong-shape"]  # fmt: skip


def _text(value) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value) if isinstance(value, list) else str(value)


PERTURBATIONS = ["field", "field", "bounded", "bounded", "garbage-key", "model-opt", "method-opt", "flag",
                 "yaml", "idx", "idx", "teacher", "name", "run-dir"]  # fmt: skip
FLAGS = ["--eps", "--lr", "--seed", "--steps", "--epochs", "--batch-size", "--device", "--subset", "--bogus-flag"]
EVALUATE_FLAGS = ("--eps", "--seed", "--device", "--batch-size", "--bogus-flag")
FLAG_VALUES = ["0.1", "1", "16", "cpu", "-1", "0", "abc", "1e400", "nan", "inf", "cuda:7", "meta", "", "9" * 25]


@st.composite
def perturbation(draw) -> tuple[str, object, object]:
    """One thing made wrong (or merely unusual) in an otherwise valid command line."""
    kind = draw(st.sampled_from(PERTURBATIONS))
    if kind == "field":
        return kind, draw(st.sampled_from([f for f in FIELDS if f not in BOUNDED])), draw(ANY_VALUE)
    if kind == "bounded":
        key = draw(st.sampled_from(sorted(BOUNDED)))
        return kind, key, draw(st.sampled_from(BOUNDED[key]))
    if kind == "garbage-key":
        return kind, draw(st.sampled_from(GARBAGE_KEYS)), draw(ANY_VALUE)
    if kind == "model-opt":
        key = draw(st.sampled_from(sorted(MODEL_OPTS)))
        return kind, f"model_opts.{key}", draw(st.sampled_from(MODEL_OPTS[key]))
    if kind == "method-opt":
        key = draw(st.sampled_from(sorted(METHOD_OPTS)))
        return kind, f"method_opts.{key}", draw(st.sampled_from(METHOD_OPTS[key]))
    if kind == "flag":
        return kind, draw(st.sampled_from(FLAGS)), draw(st.sampled_from(FLAG_VALUES))
    if kind == "yaml":
        return kind, draw(st.sampled_from(["garbage", "list", "unknown-key", "empty", "mapping"])), None
    if kind == "idx":
        files = draw(st.lists(st.sampled_from(IDX_MODES), min_size=4, max_size=4))
        return kind, draw(st.sampled_from(["mnist", "fashion-mnist"])), files
    if kind == "teacher":
        kinds = ["missing", "no-model", "garbage-file", "spec-only", "tampered", "three-channels", "five-classes"]
        return kind, draw(st.sampled_from(kinds)), None
    if kind == "run-dir":
        return kind, draw(st.sampled_from(["a-file", "under-a-file", "checkpoints-only", "damaged-checkpoints"])), None
    which = draw(st.sampled_from(["method", "model", "data"]))
    return kind, which, draw(st.sampled_from(NAMES[which]))


NAMES = {
    "method": ["nonsense", "", "PGD-AT", "rslad", "standard", "pgd at"],
    "model": ["nonsense", "wrn-3-2", "resnet-999", "SMALLCNN", ""],
    "data": ["nonsense", "cifar10", "imagefolder", "DIGITS", ""],
}


@st.composite
def examples(draw) -> dict:
    command = draw(st.sampled_from(["train-teacher", "train-teacher", "distill", "distill", "evaluate"]))
    methods = ["standard", "pgd-at", "trades", "mart"] if command == "train-teacher" else DISTILL_METHODS
    return {
        "command": command,
        "method": draw(st.sampled_from(methods)),
        "as_yaml": draw(st.booleans()),  # the valid keys go to a --config file instead of key=value
        "perturbations": draw(st.lists(perturbation(), max_size=2)),
        "existing": draw(st.booleans()),
        "overwrite": draw(st.booleans()),
        "resume": draw(st.sampled_from([False, False, False, True])),
    }


def _idx_bytes(mode: str, kind: str, rng: np.random.Generator) -> bytes | None:
    n = 40
    if kind == "images":
        shape = (n, 28, 28) if mode != "wrong-shape" else (n, 8, 8)
        body = rng.integers(0, 256, size=shape, dtype=np.uint8).tobytes()
        header = (0x0803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in shape)
    else:
        labels = np.arange(n) % 10
        if mode == "label-out-of-range":
            labels[3] = 200
        body = labels.astype(np.uint8).tobytes()
        count = n + (5 if mode == "count-mismatch" else 0)
        header = (0x0801).to_bytes(4, "big") + count.to_bytes(4, "big")
    raw = header + body
    if mode == "missing":
        return None
    if mode == "empty":
        return b""
    if mode == "random":
        return rng.integers(0, 256, size=int(rng.integers(1, 200)), dtype=np.uint8).tobytes()
    if mode == "truncated":
        return raw[: int(rng.integers(0, len(raw)))]
    if mode == "bad-magic":
        return b"\x12\x34" + raw[2:]
    if mode == "valid-gz":
        return gzip.compress(raw)
    if mode == "gz-truncated":
        packed = gzip.compress(raw)
        return packed[: len(packed) // 2]
    return raw


def write_idx_dir(root: Path, modes: list[str], seed: int) -> None:
    rng = np.random.default_rng(seed)
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    root.mkdir(parents=True, exist_ok=True)
    for name, mode in zip(names, modes, strict=True):
        data = _idx_bytes(mode, "images" if "images" in name else "labels", rng)
        if data is not None:
            (root / (name + (".gz" if mode.endswith("gz") or mode == "gz-truncated" else ""))).write_bytes(data)


def snapshot(run_dir: Path) -> dict[str, bytes]:
    if run_dir.is_file():
        return {".": run_dir.read_bytes()}
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


SMALL = {  # the valid, small base of every example (a perturbation may replace any of it)
    "epochs": 1, "subset": 32, "test_subset": 32, "batch_size": 16, "steps": 1, "eval_every": 0, "eval_n": 8,
    "model_opts.width": 0.25, "model_opts.hidden": 16, "model_opts.dropout": 0, "method_opts.nce_k": 8, "seed": 5,
}  # fmt: skip


def build_argv(example: dict, work: Path, teacher_dir: Path, finished_run: Path) -> tuple[list[str], Path | None]:
    """The command line of one example (and the pre-existing run directory it may point at)."""
    data, data_dir, names = "digits", work / "data", {"method": example["method"], "model": "smallcnn"}
    teacher = str(teacher_dir)
    keys: dict[str, object] = dict(SMALL)
    if example["method"] != "gacd":
        keys.pop("method_opts.nce_k")
    flags: list[str] = []
    yaml_mode = "mapping" if example["as_yaml"] else None
    run_dir_kind = None
    for kind, key, value in example["perturbations"]:
        if kind in ("field", "bounded", "garbage-key", "model-opt", "method-opt"):
            keys[str(key)] = value
        elif kind == "flag":
            flags += [str(key), str(value)]
        elif kind == "yaml":
            yaml_mode = str(key)
        elif kind == "idx":
            data = str(key)
            write_idx_dir(data_dir, list(value), seed=len(example["perturbations"]))  # type: ignore[arg-type]
        elif kind == "teacher":
            teacher = _bad_teacher(str(key), work, teacher_dir)
        elif kind == "run-dir":
            run_dir_kind = str(key)
        elif key == "data":
            data = str(value)
        else:
            names[str(key)] = str(value)
    if data in ("mnist", "fashion-mnist") and not data_dir.exists():
        write_idx_dir(data_dir, ["valid"] * 4, seed=0)
    if example["command"] == "evaluate":
        accepted = [x for pair in zip(flags[::2], flags[1::2], strict=True) if pair[0] in EVALUATE_FLAGS for x in pair]
        argv = ["evaluate", "--checkpoint", teacher, "--data", data, "--data-dir", str(data_dir), "--n", "16",
                "--attacks", "clean,fgsm", "--batch-size", "16", "--quiet", *accepted]  # fmt: skip
        return argv, None
    argv = [example["command"], "--method", names["method"], "--model", names["model"], "--data", data]
    argv += ["--data-dir", str(data_dir)]
    if example["command"] == "distill":
        argv += ["--teacher", teacher]
        if names["method"] == "mtard":
            argv += ["--natural-teacher", str(teacher_dir)]
    overrides = [f"{key}={_text(value)}" for key, value in keys.items()]
    if yaml_mode is None:
        argv += overrides
    else:
        config = work / "config-in.yaml"
        config.write_text(_yaml(yaml_mode, keys))
        argv += ["--config", str(config)]
        if yaml_mode != "mapping":
            argv += overrides
    argv += flags
    existing = None
    run_dir = work / "run"
    if example["existing"] or run_dir_kind in ("checkpoints-only", "damaged-checkpoints"):
        shutil.copytree(finished_run, run_dir)
        existing = run_dir
        if run_dir_kind is not None:  # a run killed early: checkpoints and nothing else
            for path in run_dir.iterdir():
                if path.name != "checkpoints":
                    path.unlink()
            for path in (run_dir / "checkpoints").iterdir() if run_dir_kind == "damaged-checkpoints" else ():
                path.write_bytes(path.read_bytes()[:100])
    elif run_dir_kind in ("a-file", "under-a-file"):
        run_dir.write_text("not a directory\n")
        existing = run_dir
        if run_dir_kind == "under-a-file":
            run_dir = run_dir / "sub"
    argv += ["--run-dir", str(run_dir), "--quiet"]
    if example["overwrite"]:
        argv.append("--overwrite")
    if example["resume"]:
        argv.append("--resume")
    return argv, existing


def _yaml(mode: str, keys: dict[str, object]) -> str:
    if mode == "mapping":
        nested: dict[str, object] = {}
        for key, value in keys.items():
            head, _, sub = key.partition(".")
            if sub and head in ("model_opts", "method_opts"):
                nested.setdefault(head, {})[sub] = value  # type: ignore[index]
            else:
                nested[key] = value
        try:
            return yaml.safe_dump(nested)
        except yaml.YAMLError:
            return "epochs: 1\n"
    return {"garbage": "epochs: [1, 2\n  bad: {", "list": "- 1\n- 2\n", "unknown-key": "epochz: 3\n", "empty": ""}[mode]


def _bad_teacher(kind: str, work: Path, teacher_dir: Path) -> str:
    if kind == "missing":
        return str(work / "no-such-teacher")
    if kind == "no-model":
        (work / "empty-run").mkdir(exist_ok=True)
        return str(work / "empty-run")
    if kind == "garbage-file":
        (work / "garbage.safetensors").write_bytes(os.urandom(64))
        return str(work / "garbage.safetensors")
    if kind == "spec-only":
        return str(teacher_dir / "model.json")
    if kind in ("three-channels", "five-classes"):  # a valid model file that does not fit the student's data
        from robustdistill import models

        folder = work / kind
        if not folder.exists():
            channels, classes = (3, 10) if kind == "three-channels" else (1, 5)
            model = models.create("smallcnn", num_classes=classes, in_channels=channels, width=0.25, hidden=16)
            models.save(model, folder / "model.safetensors")
        return str(folder)
    tampered = work / "tampered"  # weights changed after saving: the spec's SHA-256 no longer matches
    if tampered.exists():
        return str(tampered)
    shutil.copytree(teacher_dir, tampered, ignore=shutil.ignore_patterns("checkpoints"))
    raw = bytearray((tampered / "model.safetensors").read_bytes())
    raw[-1] ^= 0x01
    (tampered / "model.safetensors").write_bytes(bytes(raw))
    return str(tampered)


@contextlib.contextmanager
def isolated_global_state():
    """A run in this process changes torch's global flags and RNG: put them back afterwards."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    rng = torch.get_rng_state()
    py_rng, np_rng = random.getstate(), np.random.get_state()
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.set_rng_state(rng)
        random.setstate(py_rng)
        np.random.set_state(np_rng)
        torch.set_num_threads(threads)


def run_main(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    with isolated_global_state():
        try:
            cli.main(argv)
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.err


@pytest.fixture(scope="module")
def fixtures_dir(tmp_path_factory):
    """A teacher and a finished run (with results) made once through the command line."""
    warm_up()
    root = tmp_path_factory.mktemp("fuzz")
    small = ["--data", "digits", "--subset", "32", "--batch-size", "16", "--epochs", "1", "--steps", "1",
             "model_opts.width=0.25", "model_opts.hidden=16", "model_opts.dropout=0", "eval_every=0",
             "--quiet", "--seed", "777", "checkpoint_every=1"]  # fmt: skip
    for name in ("teacher", "finished"):
        with isolated_global_state():
            try:
                cli.main(["train-teacher", "--method", "standard", *small, "--run-dir", str(root / name)])
            except SystemExit as stop:
                assert not stop.code
    (root / "finished" / "results.json").write_text("{}\n")
    return root / "teacher", root / "finished"


@settings(
    max_examples=int(os.environ.get("ROBUSTDISTILL_FUZZ_EXAMPLES", "40")),  # raise it for a longer hunt
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(example=examples())
def test_random_command_lines_run_or_fail_with_one_line(example, capsys, fixtures_dir, monkeypatch):
    teacher_dir, finished_run = fixtures_dir
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        monkeypatch.chdir(work)  # a run directory from a random `name` would land here
        argv, existing = build_argv(example, work, teacher_dir, finished_run)
        before = snapshot(existing) if existing is not None else None
        code, err = run_main(argv, capsys)
        lines = [line for line in err.splitlines() if line.strip()]
        assert "Traceback" not in err, err
        others = [line for line in lines if not line.startswith("warning:")]
        event("exit 0" if code == 0 else f"exit {code}: " + (others[0].replace(tmp, "")[:70] if others else "?"))
        if code == 0:
            assert not others, f"{argv}\n{err}"
        else:
            assert len(others) == 1 and others[0].startswith("error: "), f"{argv}\n{err}"
            assert lines[-1] == others[0]
            assert "run with --debug" not in others[0], f"unchecked failure: {argv}\n{err}"
        if existing is not None and "--overwrite" not in argv:
            assert snapshot(existing) == before, f"results changed without --overwrite: {argv}\n{err}"


_BASE = {"as_yaml": True, "perturbations": [], "overwrite": False, "resume": False, "existing": False}
KNOWN = {  # name: (example, exit code, what the one line must say)
    "distill-gacd-runs": ({**_BASE, "command": "distill", "method": "gacd"}, 0, None),
    "evaluate-runs": ({**_BASE, "command": "evaluate", "method": "standard"}, 0, None),
    "finished-run-kept": ({**_BASE, "command": "train-teacher", "method": "trades", "existing": True}, 1,
                          "already holds results"),
    "resume-other-config": ({**_BASE, "command": "train-teacher", "method": "standard", "existing": True,
                             "resume": True}, 1, "different configuration"),
    "label-out-of-range": ({**_BASE, "command": "train-teacher", "method": "standard",
                            "perturbations": [("idx", "mnist", ["valid", "label-out-of-range", "valid", "valid"])]},
                           1, "label 200, outside [0, 10)"),
    "bad-magic": ({**_BASE, "command": "train-teacher", "method": "standard",
                   "perturbations": [("idx", "fashion-mnist", ["bad-magic", "valid", "valid", "valid"])]},
                  1, "is not an IDX file"),
    "truncated-idx": ({**_BASE, "command": "train-teacher", "method": "standard",
                       "perturbations": [("idx", "mnist", ["valid", "valid", "truncated", "valid"])]},
                      1, "truncated"),
    "wrong-image-shape": ({**_BASE, "command": "train-teacher", "method": "standard",
                           "perturbations": [("idx", "mnist", ["wrong-shape", "valid", "valid", "valid"])]},
                          1, "expected (1, 28, 28)"),
    "tampered-teacher": ({**_BASE, "command": "distill", "method": "kd",
                          "perturbations": [("teacher", "tampered", None)]}, 1, "SHA-256 does not match"),
    "teacher-channels": ({**_BASE, "command": "distill", "method": "rslad",
                          "perturbations": [("teacher", "three-channels", None)]}, 1,
                         "the teacher takes 3-channel images but 'digits' has 1-channel images"),
    "teacher-classes": ({**_BASE, "command": "distill", "method": "rslad",
                         "perturbations": [("teacher", "five-classes", None)]}, 1,
                        "the teacher has 5 classes but the student's data has 10"),
    "typo-did-you-mean": ({**_BASE, "command": "train-teacher", "method": "standard",
                           "perturbations": [("garbage-key", "epoch", 3)]}, 1, "Did you mean 'epochs'?"),
    "eps-not-positive": ({**_BASE, "as_yaml": False, "command": "train-teacher", "method": "pgd-at",
                          "perturbations": [("field", "eps", -1)]}, 1, "invalid value for 'eps'"),
    "eps-above-one": ({**_BASE, "as_yaml": False, "command": "train-teacher", "method": "pgd-at",
                       "perturbations": [("field", "eps", 2)]}, 1, "an L-inf eps must be at most 1"),
    "lr-overflows-float32": ({**_BASE, "command": "train-teacher", "method": "standard",
                              "perturbations": [("field", "lr", 1e300)]}, 1, "invalid value for 'lr'"),
    "steps-above-bound": ({**_BASE, "command": "train-teacher", "method": "pgd-at",
                           "perturbations": [("field", "steps", 100000)]}, 1, "less than or equal to 1000"),
    "steps-zero": ({**_BASE, "command": "train-teacher", "method": "pgd-at",
                    "perturbations": [("bounded", "steps", 0)]}, 1, "invalid value for 'steps'"),
    "unknown-method": ({**_BASE, "command": "distill", "method": "rslad",
                        "perturbations": [("name", "method", "pgd at")]}, 1, "Did you mean 'pgd-at'?"),
    "absent-device": ({**_BASE, "command": "train-teacher", "method": "standard",
                       "perturbations": [("flag", "--device", "cuda:7")]}, 1, "is not available here"),
    "device-meta": ({**_BASE, "command": "distill", "method": "kd",
                     "perturbations": [("flag", "--device", "meta")]}, 1, "device 'meta' is not supported"),
    "run-dir-is-a-file": ({**_BASE, "command": "train-teacher", "method": "standard",
                           "perturbations": [("run-dir", "a-file", None)]}, 1, "is a file, not a directory"),
    "run-dir-under-a-file": ({**_BASE, "command": "train-teacher", "method": "standard",
                              "perturbations": [("run-dir", "under-a-file", None)]}, 1,
                             "cannot create the run directory"),
    "only-damaged-checkpoints": ({**_BASE, "command": "train-teacher", "method": "standard", "resume": True,
                                  "perturbations": [("run-dir", "damaged-checkpoints", None)]}, 1,
                                 "holds no valid checkpoint"),
    "unknown-flag": ({**_BASE, "command": "train-teacher", "method": "standard",
                      "perturbations": [("flag", "--bogus-flag", "1")]}, 2, "No such option: --bogus-flag"),
    "flag-not-a-number": ({**_BASE, "command": "distill", "method": "kd",
                           "perturbations": [("flag", "--epochs", "abc")]}, 2, "Invalid value for '--epochs'"),
    "markup-in-message": ({**_BASE, "command": "train-teacher", "method": "standard",
                           "perturbations": [("garbage-key", "[bold]x[/bold]", 1)]}, 1,
                          "unknown configuration key '[bold]x[/bold]'"),
    "seed-out-of-range": ({**_BASE, "command": "train-teacher", "method": "standard",
                           "perturbations": [("bounded", "seed", -5)]}, 1, "invalid value for 'seed'"),
    "yaml-reads-on-as-true": ({**_BASE, "as_yaml": False, "command": "train-teacher", "method": "standard",
                               "perturbations": [("bounded", "channels_last", "on")]}, 0, None),
    "config-not-a-mapping": ({**_BASE, "command": "train-teacher", "method": "standard",
                              "perturbations": [("yaml", "list", None)]}, 1, "must hold a mapping"),
    "config-broken-yaml": ({**_BASE, "command": "train-teacher", "method": "standard",
                            "perturbations": [("yaml", "garbage", None)]}, 1, "is not valid YAML at line 2"),
    "missing-teacher": ({**_BASE, "command": "distill", "method": "ard",
                         "perturbations": [("teacher", "missing", None)]}, 1, "does not exist"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_known_inputs_give_their_outcome(name, capsys, fixtures_dir, tmp_path):
    """The property is not vacuous: these fixed examples run through the same harness and must give
    exactly this exit code and message (and keep a pre-existing run directory as it was)."""
    teacher_dir, finished_run = fixtures_dir
    example, expected, message = KNOWN[name]
    argv, existing = build_argv(example, tmp_path, teacher_dir, finished_run)
    before = snapshot(existing) if existing else None
    code, err = run_main(argv, capsys)
    assert code == expected, err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning:")]
    if expected:
        assert len(lines) == 1 and message in lines[0], err
    else:
        assert not lines, err
    if existing:
        assert snapshot(existing) == before


def test_debug_shows_the_traceback_and_the_same_last_line(capsys, tmp_path):
    argv = ["train-teacher", "--data", "digits", "epochz=3", "--run-dir", str(tmp_path / "run")]
    code, err = run_main(argv, capsys)
    assert code == 1 and err.strip() == "error: unknown configuration key 'epochz'. Did you mean 'epochs'?"
    code, err = run_main(["--debug", *argv], capsys)
    assert code == 1 and "Traceback (most recent call last)" in err
    assert err.strip().splitlines()[-1] == "error: unknown configuration key 'epochz'. Did you mean 'epochs'?"


def test_bare_command_prints_the_help(capsys):
    code, err = run_main([], capsys)
    assert code == 0 and "error" not in err


def test_unwritable_json_record_is_one_line(capsys, fixtures_dir, tmp_path):
    teacher_dir, _ = fixtures_dir
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    argv = ["evaluate", "--checkpoint", str(teacher_dir), "--data", "digits", "--n", "8", "--attacks", "clean",
            "--quiet", "--json", str(blocker / "record.json")]  # fmt: skip
    code, err = run_main(argv, capsys)
    assert code == 1 and err.strip().startswith("error: cannot write --json"), err
