"""Tests of robustdistill.models: architectures, registry, safe save/load, foreign checkpoints."""

from __future__ import annotations

import json
import os
import pickle
import shlex

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustdistill import models
from robustdistill.errors import CheckpointError, ConfigError
from robustdistill.models import registry as model_registry
from tests.reference_wrn import RefWideResNet

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2471, 0.2435, 0.2616)

# Every registered model, as (name to create, small options). The two fixed-size WRNs are run at
# the same depth with widen factor 1 through the wrn-D-K family; full-size ones are checked below.
TINY: dict[str, tuple[str, dict]] = {
    "resnet-18": ("resnet-18", {"width": 0.25}),
    "resnet-34": ("resnet-34", {"width": 0.125}),
    "preact-resnet-18": ("preact-resnet-18", {"width": 0.25}),
    "wide-resnet": ("wide-resnet", {"depth": 10, "widen_factor": 2}),
    "wrn-28-10": ("wrn-28-1", {}),
    "wrn-34-10": ("wrn-34-1", {}),
    "mobilenet-v2": ("mobilenet-v2", {"width": 0.25}),
    "smallcnn": ("smallcnn", {"width": 0.5, "hidden": 32}),
    "lenet-small": ("lenet-small", {"width": 0.5, "hidden": 16}),
    "dm-wide-resnet": ("dm-wrn-10-1", {}),
    "dm-preact-resnet-18": ("dm-preact-resnet-18", {"width": 0.125}),
    "dm-preact-resnet-34": ("dm-preact-resnet-34", {"width": 0.0625}),
}
SHAPES = [(3, 32, 32), (1, 28, 28), (1, 8, 8)]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and they thrash on a shared machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny(key: str, **overrides) -> models.Classifier:
    name, kwargs = TINY[key]
    return models.create(name, **{**kwargs, **overrides})


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def settle_batchnorm(model: nn.Module, shape: tuple[int, ...] = (2, 3, 16, 16)) -> nn.Module:
    """Move BatchNorm running statistics away from their defaults, then switch to eval mode."""
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.rand(*shape))
    return model.eval()


# -- every architecture ------------------------------------------------------------------------


def test_every_registered_model_is_covered() -> None:
    assert set(models.available()) == set(TINY)
    assert {"resnet-18", "resnet-34", "preact-resnet-18", "wrn-34-10", "wrn-28-10", "mobilenet-v2", "smallcnn"} <= set(
        models.available()
    )


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("key", sorted(TINY))
def test_shapes_and_forward_features(key: str, shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    model = tiny(key, num_classes=7, in_channels=shape[0]).eval()
    x = torch.rand(2, *shape)
    with torch.no_grad():
        logits = model(x)
        feats = model.features(x)
        both_logits, both_feats = model.forward_features(x)
    assert logits.shape == (2, 7)
    assert feats.shape == (2, model.feature_dim)
    assert torch.allclose(both_logits, logits, atol=1e-6)
    assert torch.allclose(both_feats, feats, atol=1e-6)
    assert torch.allclose(model.head(feats), logits, atol=1e-6)
    assert feats.abs().sum() > 0
    assert model.mean.shape == model.std.shape == (1, shape[0], 1, 1)
    json.dumps(model.spec)  # JSON-serialisable


@pytest.mark.parametrize("key", sorted(TINY))
def test_train_mode_backward_on_small_input(key: str) -> None:
    model = tiny(key, in_channels=1).train()
    x = torch.rand(2, 1, 8, 8, requires_grad=True)
    loss = F.cross_entropy(model(x), torch.tensor([0, 1]))
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_feature_dims_follow_width() -> None:
    assert models.create("resnet-18").feature_dim == 512
    assert models.create("resnet-18", width=0.25).feature_dim == 128
    assert models.create("preact-resnet-18", width=0.25).feature_dim == 128
    assert models.create("wrn-16-2").feature_dim == 128
    assert models.create("mobilenet-v2", width=0.25).feature_dim == 1280
    assert models.create("smallcnn", in_channels=1).feature_dim == 200


def test_parameter_counts_match_the_papers() -> None:
    def count(name: str, **kwargs) -> int:
        with torch.device("meta"):  # shapes only: no memory, no initialisation cost
            return n_params(models.create(name, **kwargs))

    def close(value: int, expected: float, rel: float = 0.02) -> bool:
        return abs(value - expected) <= rel * expected

    assert close(count("resnet-18"), 11.17e6)
    assert close(count("resnet-34"), 21.28e6)
    assert close(count("preact-resnet-18"), 11.17e6)
    assert 2.2e6 <= count("mobilenet-v2") <= 2.35e6
    assert 0.3e6 <= count("smallcnn", in_channels=1) <= 1e6
    # LeNetSmall of Croce et al.: conv 16 (4x4x1) + conv 32 (4x4x16) + fc 1568x100 + fc 100x10, with biases
    assert count("lenet-small", in_channels=1) == 16 * 16 + 16 + 32 * 256 + 32 + 1568 * 100 + 100 + 100 * 10 + 10
    assert close(count("wrn-34-10"), 46.16e6)
    assert close(count("wrn-28-10"), 36.48e6)
    assert close(count("resnet-18", num_classes=100), 11.22e6, rel=0.005)
    assert close(count("dm-wrn-70-16"), 267e6, rel=0.005)  # Gowal et al. 2020, Table 1
    assert close(count("dm-wrn-28-10"), 36.48e6)


def test_full_size_teacher_output_shapes() -> None:
    with torch.device("meta"):
        wrn = models.create("wrn-34-10", num_classes=100)
        logits, feats = wrn.forward_features(torch.empty(2, 3, 32, 32))
    assert logits.shape == (2, 100) and feats.shape == (2, 640)
    assert len(wrn.block1.layer) == len(wrn.block3.layer) == 5


def test_smallcnn_matches_trades_layout_at_28x28() -> None:
    model = models.create("smallcnn", in_channels=1)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["feature_extractor.conv1.weight"] == (32, 1, 3, 3)
    assert shapes["classifier.fc1.weight"] == (200, 64 * 4 * 4)
    assert shapes["classifier.fc3.weight"] == (10, 200)
    # at 28x28 the conv stack already ends at 4x4, so the adaptive pool is the identity
    with torch.no_grad():
        maps = model.feature_extractor(torch.rand(2, 1, 28, 28))
    assert maps.shape[-2:] == (4, 4)


def test_channels_last_gives_the_same_outputs() -> None:
    model = settle_batchnorm(tiny("preact-resnet-18"))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        got = model(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize(
    "key", ["smallcnn", "preact-resnet-18", "wide-resnet", "dm-wide-resnet", "dm-preact-resnet-18"]
)
def test_compiles_as_one_graph(key: str) -> None:
    model = tiny(key, in_channels=1).eval()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x), atol=1e-6)


# -- normalisation ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["resnet-18", "smallcnn"])
def test_normalisation_is_exactly_the_affine_change(key: str) -> None:
    torch.manual_seed(0)
    normed = settle_batchnorm(tiny(key, mean=CIFAR_MEAN, std=CIFAR_STD))
    if key == "smallcnn":  # TRADES starts the last layer at zero; give it weights
        nn.init.normal_(normed.classifier.fc3.weight)
    plain = tiny(key).eval()
    state = normed.state_dict()
    state["mean"], state["std"] = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    models.load_into(plain, state)
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(normed(x), plain((x - mean) / std), atol=1e-5)
        assert torch.allclose(normed.features(x), plain.features((x - mean) / std), atol=1e-5)
        assert not torch.allclose(normed(x), plain(x), atol=1e-3)  # the buffers do matter
    assert normed.spec["mean"] == pytest.approx(CIFAR_MEAN)
    assert normed.spec["std"] == pytest.approx(CIFAR_STD)


def test_default_normalisation_is_identity_and_validated() -> None:
    model = models.create("smallcnn", in_channels=1)
    assert torch.equal(model.mean, torch.zeros(1, 1, 1, 1)) and torch.equal(model.std, torch.ones(1, 1, 1, 1))
    grey = models.create("smallcnn", in_channels=1, mean=[0.1307], std=[0.3081])
    assert grey.mean.flatten().tolist() == pytest.approx([0.1307])
    with pytest.raises(ConfigError, match="3 input channels"):
        models.create("resnet-18", width=0.25, mean=[0.5, 0.5], std=[0.5, 0.5, 0.5])
    with pytest.raises(ConfigError, match="positive"):
        models.create("resnet-18", width=0.25, std=[0.5, 0.0, 0.5])


# -- registry -----------------------------------------------------------------------------------


def test_unknown_name_suggests_a_close_one() -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'resnet-19'\. Did you mean 'resnet-18'\?"):
        models.create("resnet-19")


def test_unknown_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"does not accept option\(s\) depth; it accepts: width"):
        models.create("resnet-18", depth=3)
    with pytest.raises(ConfigError, match="JSON"):
        models.create("resnet-18", width=object())


def test_wrn_pattern_resolves_and_validates() -> None:
    model = models.create("wrn-16-2")
    assert isinstance(model, models.WideResNet)
    assert (model.depth, model.widen_factor) == (16, 2)
    assert len(model.block1.layer) == 2 and model.feature_dim == 128
    assert model.spec["arch"] == "wrn-16-2" and model.spec["kwargs"] == {}
    assert models.resolve("WRN16-2") == "wrn-16-2"
    assert models.resolve("wrn-34-10") == "wrn-34-10"
    with pytest.raises(ConfigError, match=r"'wrn-17-2' is not a valid wide ResNet.*\(D - 4\) % 6 == 0"):
        models.create("wrn-17-2")
    with pytest.raises(ConfigError, match="widen factor"):
        models.create("wrn-16-0")
    with pytest.raises(ConfigError, match="fixes depth"):
        models.create("wrn-16-2", depth=22)


def test_register_model_adds_a_creatable_savable_model(tmp_path) -> None:
    class Tiny(models.Classifier):
        def __init__(self, num_classes: int = 10, in_channels: int = 3, hidden: int = 4) -> None:
            super().__init__(num_classes, in_channels)
            self.conv = nn.Conv2d(in_channels, hidden, 3, padding=1)
            self.feature_dim = hidden
            self.fc = nn.Linear(hidden, num_classes)

        def embed(self, z: torch.Tensor) -> torch.Tensor:
            return F.adaptive_avg_pool2d(F.relu(self.conv(z)), 1).flatten(1)

    models.register_model("test-tiny-net", aliases=("tinynet",))(Tiny)
    try:
        with pytest.raises(ValueError, match="registered twice"):
            models.register_model("test-tiny-net")(Tiny)
        model = models.create("tinynet", num_classes=3, hidden=5)
        assert model.spec["arch"] == "test-tiny-net" and model.feature_dim == 5
        models.save(model, tmp_path / "tiny.safetensors")
        loaded = models.load(tmp_path / "tiny.safetensors")
        x = torch.rand(2, 3, 8, 8)
        assert torch.equal(loaded(x), model(x))
    finally:
        model_registry._REGISTRY._factories.pop("test-tiny-net", None)
        model_registry._REGISTRY._aliases.pop("tinynet", None)
    assert "test-tiny-net" not in models.available()


def test_model_built_directly_has_no_spec(tmp_path) -> None:
    model = models.ResNet((1, 1, 1, 1), width=0.125)
    with pytest.raises(ConfigError, match=r"models\.create"):
        models.save(model, tmp_path / "m.safetensors")


# -- save / load --------------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(TINY))
def test_save_load_round_trip(tmp_path, key: str) -> None:
    model = settle_batchnorm(tiny(key, num_classes=5, mean=CIFAR_MEAN, std=CIFAR_STD))
    path = models.save(model, tmp_path / "ckpt" / "model.safetensors")
    assert path.is_file() and path.with_suffix(".json").is_file()
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.json", "model.safetensors"]  # no temp files
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["format_version"] == models.FORMAT_VERSION
    assert {k: record[k] for k in model.spec} == model.spec
    loaded = models.load(path)
    assert loaded.spec == model.spec
    loaded.eval()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    reference = model.state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in loaded.state_dict().items())
    assert torch.equal(models.load(path.with_suffix(".json")).mean, model.mean)  # either file works


def test_save_channels_last_model(tmp_path) -> None:
    model = settle_batchnorm(tiny("resnet-18")).to(memory_format=torch.channels_last)
    models.save(model, tmp_path / "cl.safetensors")
    loaded = models.load(tmp_path / "cl.safetensors").eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-5)


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch) -> None:
    path = tmp_path / "model.safetensors"
    first = settle_batchnorm(tiny("wide-resnet"))
    models.save(first, path)
    before = path.read_bytes()

    def refuse(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        models.save(tiny("wide-resnet"), path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.safetensors"]


def _saved(tmp_path):
    path = models.save(tiny("wide-resnet"), tmp_path / "model.safetensors")
    return path, path.read_bytes()


def _assert_one_line_naming(error: pytest.ExceptionInfo, name: str) -> None:
    message = str(error.value)
    assert "\n" not in message and name in message


@pytest.mark.parametrize("damage", ["empty", "truncated", "flipped-data", "flipped-header"])
def test_load_rejects_damaged_weights(tmp_path, damage: str) -> None:
    path, data = _saved(tmp_path)
    if damage == "empty":
        data = b""
    elif damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "flipped-data":
        data = data[:-1] + bytes([data[-1] ^ 0x01])
    else:
        data = data[:8] + bytes([data[8] ^ 0xFF]) + data[9:]
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as error:
        models.load(path)
    _assert_one_line_naming(error, "model.safetensors")


@pytest.mark.parametrize("damage", ["empty", "truncated", "flipped-header"])
def test_load_state_dict_file_rejects_damaged_safetensors(tmp_path, damage: str) -> None:
    path, data = _saved(tmp_path)
    data = {"empty": b"", "truncated": data[: len(data) // 2], "flipped-header": data[:8] + b"X" + data[9:]}[damage]
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as error:
        models.load_state_dict_file(path)
    _assert_one_line_naming(error, "model.safetensors")


def test_load_reports_missing_files(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="does not exist") as error:
        models.load(tmp_path / "nothing.safetensors")
    _assert_one_line_naming(error, "nothing.safetensors")
    with pytest.raises(CheckpointError, match="does not exist"):
        models.load_state_dict_file(tmp_path / "nothing.pt")
    path, _ = _saved(tmp_path)
    path.with_suffix(".json").unlink()
    with pytest.raises(CheckpointError, match=r"model\.json") as error:
        models.load(path)
    _assert_one_line_naming(error, "model.json")
    torch.save(tiny("wide-resnet").state_dict(), tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="load_weights"):
        models.load(tmp_path / "plain.pt")


def test_corrupt_pt_file_is_a_checkpoint_error(tmp_path) -> None:
    path = tmp_path / "model.pt"
    torch.save(tiny("wide-resnet").state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt") as error:
        models.load_state_dict_file(path)
    _assert_one_line_naming(error, "model.pt")
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        models.load_state_dict_file(path)


class _SystemPayload:
    def __init__(self, target) -> None:
        self.target = str(target)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.target)}",))


class _OpenPayload:
    def __init__(self, target) -> None:
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.mark.parametrize("payload", [_SystemPayload, _OpenPayload])
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_pickle_with_code_is_refused_and_never_run(tmp_path, payload, writer: str) -> None:
    # the payload is live: plain unpickling creates its file
    control = tmp_path / "control-created"
    pickle.loads(pickle.dumps(payload(control)))
    assert control.exists()

    target = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    obj = {"fc.weight": torch.zeros(2, 2), "extra": payload(target)}
    if writer == "torch.save":
        torch.save(obj, path)
    else:
        with open(path, "wb") as handle:
            pickle.dump(obj, handle, protocol=2)
    with pytest.raises(CheckpointError) as error:
        models.load_state_dict_file(path)
    assert not target.exists()
    message = str(error.value)
    assert "\n" not in message and "evil.pth" in message
    assert "weights_only=True" in message and "save_file" in message
    with pytest.raises(CheckpointError):
        models.load_weights(tiny("wide-resnet"), path)
    assert not target.exists()


# -- compatibility ------------------------------------------------------------------------------


def test_class_count_mismatch_is_explicit(tmp_path) -> None:
    teacher = tiny("resnet-18", num_classes=100)
    student = tiny("resnet-18", num_classes=10)
    with pytest.raises(CheckpointError, match="checkpoint has 100 classes, model has 10"):
        models.load_into(student, teacher.state_dict())
    models.save(teacher, tmp_path / "teacher.safetensors")
    with pytest.raises(CheckpointError, match="checkpoint has 100 classes, model has 10") as error:
        models.load_weights(student, tmp_path / "teacher.safetensors")
    _assert_one_line_naming(error, "teacher.safetensors")


def test_key_and_shape_mismatches_are_listed() -> None:
    model = tiny("resnet-18")
    state = dict(model.state_dict())
    del state["fc.bias"]
    state["projector.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"missing fc\.bias; unexpected projector\.weight") as error:
        models.load_into(model, state)
    assert "\n" not in str(error.value)
    missing, unexpected = models.load_into(model, state, strict=False)
    assert missing == ["fc.bias"] and unexpected == ["projector.weight"]
    wider = tiny("resnet-18", width=0.5).state_dict()
    with pytest.raises(CheckpointError, match=r"shapes differ: conv1\.weight \(32, 3, 3, 3\) vs model \(16, 3, 3, 3\)"):
        models.load_into(model, wider)
    with pytest.raises(CheckpointError, match="1 input channels, model has 3"):
        models.load_into(model, tiny("resnet-18", in_channels=1).state_dict())


def test_wrapped_and_prefixed_state_dict_loads(tmp_path) -> None:
    source = settle_batchnorm(tiny("resnet-18", mean=CIFAR_MEAN, std=CIFAR_STD))
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    torch.save({"model": state, "epoch": 7, "optimizer": {"lr": 0.1}}, tmp_path / "ddp.pt")
    target = tiny("resnet-18").eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(target(x), source(x))
        models.load_weights(target, tmp_path / "ddp.pt")
        assert torch.equal(target(x), source(x))
    assert target.spec["mean"] == pytest.approx(CIFAR_MEAN)


def test_kuangliu_style_compiled_state_dict_loads(tmp_path) -> None:
    source = settle_batchnorm(tiny("mobilenet-v2"))
    state = {}
    for key, value in source.state_dict().items():
        if key in ("mean", "std") or key.endswith("num_batches_tracked"):
            continue  # not in such checkpoints
        state["_orig_mod.module." + key.replace("fc.", "linear.", 1)] = value
    assert "_orig_mod.module.linear.weight" in state
    torch.save({"net": state}, tmp_path / "rslad.pth")
    target = tiny("mobilenet-v2", mean=CIFAR_MEAN, std=CIFAR_STD).eval()
    models.load_weights(target, tmp_path / "rslad.pth")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(target(x), source(x))


def test_trades_wrn_checkpoint_loads_and_matches_the_reference(tmp_path) -> None:
    torch.manual_seed(0)
    reference = settle_batchnorm(RefWideResNet(16, 10, 2, sub_block1=True, bias_last=True), shape=(2, 3, 32, 32))
    state = {f"module.{k}": v for k, v in reference.state_dict().items()}
    assert any(k.startswith("module.sub_block1.layer.0.") for k in state)
    assert "module.block1.layer.0.convShortcut.weight" in state
    torch.save(state, tmp_path / "model-wideres-epoch76.pt")

    ours = models.create("wrn-16-2", mean=CIFAR_MEAN, std=CIFAR_STD).eval()
    models.load_weights(ours, tmp_path / "model-wideres-epoch76.pt")
    # TRADES models take [0, 1] inputs: the loaded model must not normalise
    assert torch.equal(ours.mean, torch.zeros(1, 3, 1, 1)) and torch.equal(ours.std, torch.ones(1, 3, 1, 1))
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ours(x), reference(x), atol=1e-5)
    converted = models.convert_state_dict(torch.load(tmp_path / "model-wideres-epoch76.pt", weights_only=True))
    assert not any(k.startswith("sub_block1") for k in converted)
    assert set(converted) | {"mean", "std"} == set(ours.state_dict())


def test_convert_state_dict_details() -> None:
    t = torch.ones(2)
    assert models.convert_state_dict({"net": {"module._orig_mod.a.b": t}, "epoch": 3}) == {"a.b": t}
    out = models.convert_state_dict({"state_dict": {"mu": torch.zeros(3), "sigma": torch.ones(3)}})
    assert out["mean"].shape == out["std"].shape == (1, 3, 1, 1)
    with pytest.raises(CheckpointError, match="no tensors"):
        models.convert_state_dict({"epoch": 3})
    model = tiny("wide-resnet")
    shared_prefix = {f"student.{k}": v for k, v in model.state_dict().items()}
    assert set(models.convert_state_dict(shared_prefix, target_model=model)) == set(model.state_dict())


def test_one_line_is_the_single_error_formatter() -> None:
    from robustdistill.errors import one_line

    assert one_line("bad\n  value\tthere ") == "bad value there"
    assert one_line(KeyError()) == "KeyError" and one_line(ValueError("x\ny")) == "x y"
    assert one_line("a" * 50, 10) == "aaaaaaa..." and len(one_line("b" * 50, 10)) == 10
    assert one_line("short", 10) == "short"
