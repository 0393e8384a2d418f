"""Typed, validated run configuration: YAML in, `key=value` overrides, YAML saved per run.

One flat set of keys serves every command, in YAML files and on the command line alike
(`--epochs 5`, `epochs=5`, `--method-opt tau=30`, `method_opts.tau=30`).
"""

from __future__ import annotations

import difflib
import math
import warnings
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from robustdistill.errors import ConfigError

#: the largest float32: a learning rate above it overflows in the optimiser's float32 arithmetic
FLOAT32_MAX = 3.4028234663852886e38
#: attack step counts above this are refused (AutoAttack's APGD uses 100; PGD-1000 is already an audit)
MAX_ATTACK_STEPS = 1000
#: an L-inf eps above this is accepted with a warning (at 1 every image can become any image)
LINF_EPS_WARN = 0.5


def default_eps(data: str) -> float:
    """The dataset's default perturbation budget, from its registry entry (8/255 for unknown names)."""
    from robustdistill.data.registry import get_spec

    try:
        return get_spec(data).default_eps
    except ConfigError:  # an unknown name is reported, with suggestions, when the data are loaded
        return 8 / 255


def check_eps(eps: float, norm: str) -> float:
    """An eps must be finite and positive; under L-inf at most 1 (images are in [0, 1])."""
    if not math.isfinite(eps) or eps <= 0:
        raise ConfigError(f"invalid value for 'eps': it must be a finite number > 0, got {eps}")
    if norm.lower() in ("linf", "inf") and eps > 1:
        raise ConfigError(
            f"invalid value for 'eps': an L-inf eps must be at most 1 (images are in [0, 1]), got {eps}; "
            "for 8/255 write 0.0314"
        )
    return eps


def warn_large_eps(eps: float, norm: str) -> None:
    if norm.lower() in ("linf", "inf") and eps > LINF_EPS_WARN:
        warnings.warn(
            f"L-inf eps {eps:g} is above {LINF_EPS_WARN}: the attack may turn any image into any other; "
            "is it meant to be in [0, 1] units (8/255 = 0.0314)?",
            stacklevel=2,
        )


class RunConfig(BaseModel):
    """Everything a training run needs; saved as `config.yaml` in the run directory."""

    # allow_inf_nan=False: every float (lr, eps, weight_decay, ...) must be finite
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    # what and where
    name: str | None = None
    run_dir: str | None = None
    overwrite: bool = False
    # data
    data: str = "fashion-mnist"
    data_dir: str | None = None
    data_files: dict[str, list[str]] = Field(default_factory=dict)  # written by the run: the files each split read
    download: bool = False
    val_size: int | None = Field(default=None, ge=0)
    subset: int | None = Field(default=None, ge=1)
    test_subset: int | None = Field(default=None, ge=1)
    augment: bool = True
    # models
    model: str = "smallcnn"
    model_opts: dict[str, Any] = Field(default_factory=dict)
    teacher: str | None = None
    teacher_arch: str | None = None
    natural_teacher: str | None = None
    # objective and its inner maximisation
    method: str = "pgd-at"
    method_opts: dict[str, Any] = Field(default_factory=dict)  # the options set; not eps/step_size/steps/norm
    # written by the run: every option of the method as it trains (method_opts over the defaults, at the
    # run's eps/step_size/steps/norm); absent from runs of earlier versions; recomputed, not read, by a new run
    method_options: dict[str, Any] | None = None
    eps: float | None = Field(default=None, gt=0)
    step_size: float | None = Field(default=None, gt=0)
    steps: int = Field(default=10, ge=1, le=MAX_ATTACK_STEPS)
    norm: Literal["linf", "l2"] = "linf"
    # optimisation
    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=128, ge=1)
    lr: float = Field(default=0.1, gt=0, le=FLOAT32_MAX)  # the optimiser casts it to float32
    momentum: float = Field(default=0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(default=5e-4, ge=0, le=1)
    schedule: Literal["piecewise", "cosine", "constant"] = "piecewise"
    milestones: list[float] = Field(default_factory=lambda: [0.5, 0.75])
    lr_gamma: float = Field(default=0.1, gt=0, le=1)
    warmup_epochs: int = Field(default=0, ge=0)
    ema_decay: float | None = Field(default=None, gt=0, lt=1)
    swa_start: int | None = Field(default=None, ge=1)
    grad_clip: float | None = Field(default=None, gt=0)
    # machine
    device: str = "auto"
    amp: Literal["auto", "bf16", "off"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    deterministic: bool = False
    sync_bn: bool = False
    # evaluation during training, checkpoints, logs
    eval_every: int = Field(default=1, ge=0)
    eval_n: int = Field(default=500, ge=1)
    eval_attacks: list[str] = Field(default_factory=lambda: ["clean", "pgd-10"])
    checkpoint_every: int = Field(default=0, ge=0)
    keep_checkpoints: int = Field(default=2, ge=1)
    log_every: int = Field(default=20, ge=1)

    @field_validator("milestones")
    @classmethod
    def _milestones_sorted(cls, value: list[float]) -> list[float]:
        if any(m <= 0 for m in value) or sorted(value) != value:
            raise ValueError("milestones must be positive and increasing (fractions of the run or epoch numbers)")
        return value

    @field_validator("amp", "channels_last", mode="before")
    @classmethod
    def _yaml_switches(cls, value: Any) -> Any:
        # YAML reads a bare on/off as a boolean: give the switch its word back
        if isinstance(value, bool):
            return "on" if value else "off"
        return value

    @field_validator("data", "model", "method")
    @classmethod
    def _lowercase(cls, value: str) -> str:
        return value.strip().lower()

    @model_validator(mode="after")
    def _eps_default(self) -> RunConfig:
        if self.eps is None:
            object.__setattr__(self, "eps", default_eps(self.data))
        assert self.eps is not None
        check_eps(self.eps, self.norm)
        if self.step_size is not None and self.norm == "linf" and self.step_size > 1:
            raise ConfigError(f"invalid value for 'step_size': an L-inf step must be at most 1, got {self.step_size}")
        return self

    @model_validator(mode="after")
    def _swa_within_the_run(self) -> RunConfig:
        if self.swa_start is not None and self.swa_start > self.epochs:
            raise ValueError(
                f"swa_start is epoch {self.swa_start} but the run has {self.epochs} epochs; "
                "averaging must start at an epoch of the run"
            )
        return self

    def resolved_eps(self) -> float:
        assert self.eps is not None
        return self.eps

    def run_path(self, default_name: str) -> Path:
        return Path(self.run_dir) if self.run_dir else Path("runs") / (self.name or default_name)

    def milestone_epochs(self) -> list[int]:
        """Milestones as epoch numbers: values below 1 are fractions of `epochs`."""
        return [round(m * self.epochs) if m < 1 else int(m) for m in self.milestones]

    def attack_options(self) -> dict[str, Any]:
        return {"eps": self.eps, "step_size": self.step_size, "steps": self.steps, "norm": self.norm}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def parse_value(text: str) -> Any:
    """A command-line value as YAML would read it (`5` -> 5, `[1,2]` -> list, `none` -> None)."""
    if text.strip().lower() in ("none", "null"):
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _check_key(key: str) -> str:
    key = key.replace("-", "_")
    known = list(RunConfig.model_fields)
    if key not in known:
        close = difflib.get_close_matches(key, known, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown configuration key '{key}'.{hint}")
    return key


def apply_override(values: dict[str, Any], assignment: str) -> None:
    """Apply one `key=value` (or `method_opts.key=value`) to a raw configuration dict."""
    if "=" not in assignment:
        raise ConfigError(f"override '{assignment}' is not of the form key=value")
    key, text = assignment.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{assignment}' has an empty key")
    if "." in key:
        head, sub = key.split(".", 1)
        head = _check_key(head)
        if head not in ("method_opts", "model_opts"):
            raise ConfigError(f"only method_opts and model_opts take dotted keys, not '{head}'")
        values.setdefault(head, {})[sub] = parse_value(text)
    else:
        values[_check_key(key)] = parse_value(text)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file '{path}' is not valid YAML{where}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of keys to values")
    for key in loaded:
        _check_key(str(key))
    return {str(k).replace("-", "_"): v for k, v in loaded.items()}


def build(values: dict[str, Any]) -> RunConfig:
    """Validate a raw dict into a RunConfig; the first problem becomes a one-line ConfigError."""
    try:
        return RunConfig(**values)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        if first["type"] == "extra_forbidden":
            _check_key(where)
        cause = first.get("ctx", {}).get("error")
        if isinstance(cause, ConfigError):  # a check across keys, already worded for the user
            raise ConfigError(str(cause)) from None
        raise ConfigError(f"invalid value for '{where}': {first['msg']}") from None


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    flags: dict[str, Any] | None = None,
) -> RunConfig:
    """Merge, in rising priority: defaults, the YAML file, `key=value` overrides, explicit flags."""
    values: dict[str, Any] = read_yaml(path) if path else {}
    for assignment in overrides or []:
        apply_override(values, assignment)
    for key, value in (flags or {}).items():
        if value is None:
            continue
        if key in ("method_opts", "model_opts"):
            values.setdefault(key, {}).update(value)
        else:
            values[_check_key(key)] = value
    return build(values)
