"""Declared method options: a toy method needs one options class and one registered class; the registry
validates options from the dataclass fields, serialises them, and a run records them in config.yaml."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn

from robustdistill import methods
from robustdistill.cli import main
from robustdistill.errors import ConfigError
from robustdistill.evaluate import discovery, report
from robustdistill.methods import AttackOptions, AttackSettings, Method, Options, option, register_method
from tests.clirun import assert_ok, run_cli


@dataclass(frozen=True)
class ToyOptions(Options):
    attack: AttackOptions = field(default_factory=AttackOptions)
    weight: float = option(1.0, ge=0, help="weight of the adversarial cross-entropy")
    reduction: Literal["mean", "sum"] = option("mean", help="how the per-sample losses are reduced")


@register_method("toy-objective", aliases=("toy",), role="objective")
class Toy(Method[ToyOptions]):
    """A toy teacher objective: weight · CE(M(x'), y), x' from the run's PGD."""

    def __init__(self, options: ToyOptions, **context: Any) -> None:
        super().__init__(options, **context)
        self.attack = AttackSettings(options.attack, num_samples=self.facts.num_samples)

    def compute(self, student: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> dict[str, Tensor]:
        x_adv = self.attack.perturb(student, x, y, index)
        loss = self.options.weight * F.cross_entropy(student(x_adv), y, reduction=self.options.reduction)
        return {"loss": loss, "ce_adv": loss.detach()}


TINY_RUN = [
    "train-teacher", "--data", "digits", "--subset", "48", "--batch-size", "16", "--epochs", "1", "--steps", "1",
    "--model", "smallcnn", "model_opts.width=0.25", "model_opts.hidden=16", "model_opts.dropout=0", "eval_every=0",
    "--seed", "1", "--quiet",
]  # fmt: skip


# ---------------------------------------------------------------------------------------------- the toy method


def test_a_toy_method_is_registered_with_its_metadata():
    assert "toy-objective" in methods.available() and "toy-objective" in methods.available("objective")
    assert "toy-objective" not in methods.available("distillation")
    assert methods.canonical("TOY") == "toy-objective"
    spec = methods.spec("toy")
    assert (spec.name, spec.cls, spec.options, spec.role) == ("toy-objective", Toy, ToyOptions, "objective")
    assert not spec.needs_teacher and not spec.needs_natural_teacher and spec.same_label_space
    assert spec.summary == "A toy teacher objective: weight · CE(M(x'), y), x' from the run's PGD."
    rows = {row.name: row for row in methods.option_table("toy")}
    assert list(rows) == ["weight", "reduction", "eps", "step_size", "steps", "norm", "reuse_steps"]
    assert rows["weight"] == ("weight", 1.0, "float", ">= 0", "weight of the adversarial cross-entropy")
    assert rows["reduction"].allowed == "mean, sum" and rows["steps"].allowed == "in [1, 1000]"


def test_a_toy_method_validates_its_options_with_a_did_you_mean():
    method = methods.create("toy", weight=2, eps=0.1, steps=2)
    assert isinstance(method, Toy) and method.options.weight == 2.0 and isinstance(method.options.weight, float)
    assert method.attack.steps == 2 and method.attack.step_size == pytest.approx(0.025)
    with pytest.raises(ConfigError, match=r"method 'toy-objective' has no option 'wieght'\. Did you mean 'weight'\?"):
        methods.create("toy", wieght=2)
    with pytest.raises(ConfigError, match=r"option 'weight' must be a number >= 0, got -1"):
        methods.create("toy", weight=-1)
    with pytest.raises(ConfigError, match=r"'reduction' must be one of mean, sum, got 'summ'\. Did you mean 'sum'"):
        methods.create("toy", reduction="summ")


def test_a_toy_method_is_listed_by_the_methods_command(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    for args in (["methods"], ["methods", "toy"]):
        try:
            main(args)  # returns on success
        except SystemExit as stop:
            pytest.fail(f"robustdistill {' '.join(args)} exited with {stop.code}: {capsys.readouterr().err}")
        out, _ = capsys.readouterr()
        assert "toy-objective" in out and "weight" in out and "reduction" in out


def test_a_toy_run_records_its_resolved_options_in_config_yaml(tmp_path):
    run_dir = tmp_path / "toy"
    outcome = run_cli([*TINY_RUN, "--method", "toy", "--method-opt", "weight=0.5", "--run-dir", str(run_dir)])
    assert_ok(outcome)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["method"] == "toy" and config["method_opts"] == {"weight": 0.5}  # what was asked for
    assert config["method_options"] == {  # what trained: every option, the attack at the run's settings
        "weight": 0.5,
        "reduction": "mean",
        "eps": config["eps"],
        "step_size": None,
        "steps": 1,
        "norm": "linf",
        "reuse_steps": 0,
    }
    assert methods.spec("toy").validate(config["method_options"]) == ToyOptions(
        attack=AttackOptions(eps=config["eps"], steps=1), weight=0.5
    )
    assert (run_dir / "model.safetensors").is_file()


def test_the_report_and_the_speed_benchmark_pick_up_a_toy_method(tmp_path, monkeypatch):
    runs_dir = tmp_path / "runs"
    assert_ok(run_cli([*TINY_RUN, "--method", "toy", "--run-dir", str(runs_dir / "toy-teacher")]))
    student = [*TINY_RUN, "--method", "ard", "--teacher", str(runs_dir / "toy-teacher"), "--run-dir"]
    student[0] = "distill"
    assert_ok(run_cli([*student, str(runs_dir / "ard-student")]))
    runs, teacher, collection = discovery.discover_runs(runs_dir)
    assert collection and teacher is not None and teacher.label == "toy-teacher"  # the registry says: an objective
    assert [(run.label, run.role) for run in runs] == [("toy-teacher", "teacher"), ("ard-student", "student")]
    text = report.write_report(runs_dir, sweep_points=0, examples=0, device="cpu", progress=False).read_text()
    assert "| toy-teacher | teacher |" in text

    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "benchmarks"))
    from speedbench.bench import build_setup
    from speedbench.cli import parse_args
    from speedbench.measure import measure_variants, parse_variant

    args = parse_args(["--batch", "4", "--steps", "1", "--num-samples", "16", "--teacher", "smallcnn"])
    args.student_opts = {"width": 0.25, "hidden": 16}
    timed = measure_variants([parse_variant("toy-x2=toy:weight=2")], build_setup(args), 1, "pgd-at")
    assert timed["rows"]["toy-x2"]["method"] == "toy"
    assert timed["rows"]["toy-x2"]["options"] == {"weight": 2}
    assert timed["rows"]["toy-x2"]["ours_s"] > 0


def test_a_run_refuses_a_method_option_that_is_a_run_setting(tmp_path):
    outcome = run_cli([*TINY_RUN, "--method", "toy", "--method-opt", "eps=0.3", "--run-dir", str(tmp_path / "x")])
    assert outcome.code == 1 and outcome.signal is None
    assert "'eps' is a setting of the run, not a method option: set the run's eps (eps=0.3" in outcome.stderr
    assert not (tmp_path / "x" / "config.yaml").exists()


# ---------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("kd", {"tau": "hot"}, r"option 'tau' must be a number > 0, got 'hot'"),
        ("kd", {"alpha": True}, r"option 'alpha' must be a number in \[0, 1\], got True"),
        ("kd", {"alpha": 1.5}, r"option 'alpha' must be a number in \[0, 1\], got 1.5"),
        ("kd", {"tau": float("inf")}, r"option 'tau' must be a number > 0, got inf"),
        ("pgd-at", {"clean_fraction": 1.0}, r"option 'clean_fraction' must be a number in \[0, 1\), got 1.0"),
        ("pgd-at", {"steps": 1001}, r"option 'steps' must be an integer in \[1, 1000\], got 1001"),
        ("pgd-at", {"steps": 2.5}, r"option 'steps' must be an integer in \[1, 1000\], got 2.5"),
        ("pgd-at", {"norm": "l1"}, r"option 'norm' must be one of linf, l2, got 'l1'"),
        ("pgd-at", {"step_size": 0}, r"option 'step_size' must be a number > 0, or none, got 0"),
        ("trades", {"betta": 1.0}, r"method 'trades' has no option 'betta'. Did you mean 'beta'\?"),
        ("paths", {"target": "teacher-runner"}, r"Did you mean 'teacher-runner-up'\?"),
        ("mtard", {"weight_lr_milestones": "215"}, r"option 'weight_lr_milestones' must be a list of integers"),
        ("mtard", {"weight_lr_milestones": [10, -1]}, r"must be a list of integers >= 0, got \[10, -1\]"),
        ("peeraid", {"peer_opts": [1]}, r"option 'peer_opts' must be a mapping, or none, got \[1\]"),
        ("gacd", {"student_dim": 8}, r"method 'gacd' has no option 'student_dim'"),  # a fact of the run
    ],
)
def test_bad_options_fail_with_a_message_that_names_the_option(name, options, message):
    with pytest.raises(ConfigError, match=message):
        methods.spec(name).validate(options)


def test_values_arrive_as_yaml_and_method_opt_give_them():
    options = methods.spec("paths").validate(
        {"gamma": 2, "chunk_size": 4.0, "rho": "0.5", "inner_loss": " KL-Clean ", "aligned_steps": [2, 4], "steps": 4}
    )
    assert options.gamma == 2.0 and isinstance(options.gamma, float)
    assert options.chunk_size == 4 and isinstance(options.chunk_size, int)
    assert options.rho == 0.5 and options.inner_loss == "kl-clean"
    assert options.aligned_steps == (2, 4) and options.attack.steps == 4
    milestones = methods.spec("mtard").validate({"weight_lr_milestones": [30, 10]})
    assert milestones.weight_lr_milestones == (10, 30)
    assert milestones.to_dict()["weight_lr_milestones"] == [10, 30]


def test_options_are_frozen_and_checked_when_built_directly():
    options = AttackOptions(eps=0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.eps = 0.2  # type: ignore[misc]
    with pytest.raises(ConfigError, match=r"reuse_steps.*0\.\.steps \(2\)"):
        AttackOptions(steps=2, reuse_steps=3)
    assert dataclasses.replace(options, steps=3).eps == 0.1


@pytest.mark.parametrize("name", methods.available())
def test_every_method_round_trips_its_defaults_through_serialise_and_validate(name):
    spec = methods.spec(name)
    defaults = spec.options()
    data = yaml.safe_load(yaml.safe_dump(defaults.to_dict(), sort_keys=False))  # as config.yaml holds it
    assert spec.validate(data) == defaults
    assert list(data) == spec.options.keys() == [row.name for row in methods.option_table(name)]


def test_a_declaration_must_give_every_option_a_default_and_one_name():
    @dataclass(frozen=True)
    class NoDefault(Options):
        weight: float = field()  # type: ignore[assignment]

    @dataclass(frozen=True)
    class Twice(Options):
        attack: AttackOptions = field(default_factory=AttackOptions)
        eps: float = option(0.1, gt=0, help="clashes with the attack's eps")

    class WithoutDefault(Method[NoDefault]):
        compute = Toy.compute

    class WithTwoEps(Method[Twice]):
        compute = Toy.compute

    for name, cls, message in (("no-default", WithoutDefault, "need a default"), ("twice", WithTwoEps, "twice")):
        with pytest.raises(TypeError, match=message):
            register_method(name, role="objective")(cls)
        assert name not in methods.available()


# ---------------------------------------------------------------------------------------------- one eps per run


RUN_ATTACK = {"eps": 0.1, "step_size": None, "steps": 3, "norm": "linf"}


def test_the_run_sets_the_attack_of_every_method_that_has_one():
    pgd_at = methods.resolve_run_options("pgd-at", {"clean_fraction": 0.5}, RUN_ATTACK)
    assert pgd_at.to_dict() == {
        "clean_fraction": 0.5, "eps": 0.1, "step_size": None, "steps": 3, "norm": "linf", "reuse_steps": 0
    }  # fmt: skip
    fgsm = methods.resolve_run_options("fgsm-rs", {}, {**RUN_ATTACK, "step_size": 0.05})
    assert fgsm.to_dict() == {"eps": 0.1, "step_size": 0.05, "norm": "linf", "reuse_steps": 0}  # one step: no steps
    assert methods.resolve_run_options("kd", {"tau": 2}, RUN_ATTACK).to_dict() == {"tau": 2.0, "alpha": 0.9}


@pytest.mark.parametrize("key", ["eps", "step_size", "steps", "norm"])
def test_method_opts_cannot_set_what_the_run_sets(key):
    value = {"eps": 0.3, "step_size": 0.01, "steps": 7, "norm": "l2"}[key]
    with pytest.raises(ConfigError, match=f"'{key}' is a setting of the run, not a method option"):
        methods.resolve_run_options("ard", {key: value}, RUN_ATTACK)
    with pytest.raises(ConfigError, match="has no option 'steps'"):  # fgsm-rs has one step, no steps option
        methods.resolve_run_options("fgsm-rs", {"steps": 2}, RUN_ATTACK)


def test_a_method_trains_at_the_run_eps():
    torch.manual_seed(0)
    cfg_attack = {**RUN_ATTACK, "eps": 0.2}
    options = methods.resolve_run_options("toy", {"weight": 0.5}, cfg_attack)
    method = methods.spec("toy").build(options)
    assert (method.attack.eps, method.attack.steps, method.attack.step_size) == (0.2, 3, pytest.approx(0.05))
