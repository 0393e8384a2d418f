"""RobustBench checkpoints: the DeepMind WideResNet / PreAct ResNet and the standard WideResNet.

The reference modules below restate RobustBench's code (`model_zoo/architectures/dm_wide_resnet.py`,
`wide_resnet.py`) with its module names and forward passes, at small widths; their state dicts,
saved as RobustBench files are (`state_dict` / `model_state_dict` containers, `module.` prefixes),
must give the same logits once loaded into our models.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustdistill import models, runs
from robustdistill.errors import CheckpointError, ConfigError
from robustdistill.models.deepmind import CIFAR10_MEAN, CIFAR100_MEAN, CIFAR100_STD
from tests.clirun import SMALL, run_cli
from tests.reference_wrn import RefWideResNet


class RefSwish(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


def ref_pad(x, stride):
    if stride == 1:
        return F.pad(x, (1, 1, 1, 1))
    return F.pad(x, (0, 1, 0, 1))


class RefDMBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.batchnorm_0 = nn.BatchNorm2d(cin)
        self.relu_0 = RefSwish()
        self.conv_0 = nn.Conv2d(cin, cout, 3, stride, 0, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(cout)
        self.relu_1 = RefSwish()
        self.conv_1 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.has_shortcut = cin != cout
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, 0, bias=False) if self.has_shortcut else None
        self._stride = stride

    def forward(self, x):
        if self.has_shortcut:
            x = self.relu_0(self.batchnorm_0(x))
            v = x
        else:
            out = self.relu_0(self.batchnorm_0(x))
            v = out
        out = self.conv_1(self.relu_1(self.batchnorm_1(self.conv_0(ref_pad(v, self._stride)))))
        return torch.add(self.shortcut(x) if self.has_shortcut else x, out)


class RefDMGroup(nn.Module):
    def __init__(self, n, cin, cout, stride):
        super().__init__()
        self.block = nn.Sequential(
            *[RefDMBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1) for i in range(n)]
        )

    def forward(self, x):
        return self.block(x)


class RefDMWideResNet(nn.Module):
    def __init__(self, num_classes, depth, width, mean, std, num_input_channels=3):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(num_input_channels, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(num_input_channels, 1, 1))
        c = [16, 16 * width, 32 * width, 64 * width]
        n = (depth - 4) // 6
        self.init_conv = nn.Conv2d(num_input_channels, c[0], 3, 1, 1, bias=False)
        self.layer = nn.Sequential(
            RefDMGroup(n, c[0], c[1], 1), RefDMGroup(n, c[1], c[2], 2), RefDMGroup(n, c[2], c[3], 2)
        )
        self.batchnorm = nn.BatchNorm2d(c[3])
        self.relu = RefSwish()
        self.logits = nn.Linear(c[3], num_classes)
        self.num_channels = c[3]

    def forward(self, x):
        out = self.layer(self.init_conv((x - self.mean) / self.std))
        out = F.avg_pool2d(self.relu(self.batchnorm(out)), 8)
        return self.logits(out.view(-1, self.num_channels))


class RefDMPreActBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self._stride = stride
        self.batchnorm_0 = nn.BatchNorm2d(cin)
        self.relu_0 = RefSwish()
        self.conv_2d_1 = nn.Conv2d(cin, cout, 3, stride, 0, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(cout)
        self.relu_1 = RefSwish()
        self.conv_2d_2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.has_shortcut = stride != 1 or cin != cout
        if self.has_shortcut:
            self.shortcut = nn.Conv2d(cin, cout, 3, stride, 0, bias=False)

    def forward(self, x):
        out = self.relu_0(self.batchnorm_0(x))
        shortcut = self.shortcut(ref_pad(x, self._stride)) if self.has_shortcut else x
        out = self.conv_2d_1(ref_pad(out, self._stride))
        return self.conv_2d_2(self.relu_1(self.batchnorm_1(out))) + shortcut


class RefDMPreActResNet(nn.Module):
    def __init__(self, num_classes, planes, blocks, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(3, 1, 1))
        self.conv_2d = nn.Conv2d(3, planes[0], 3, 1, 1, bias=False)
        cin = planes[0]
        for s, (cout, n, stride) in enumerate(zip(planes, blocks, (1, 2, 2, 2), strict=True)):
            layers = [RefDMPreActBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1) for i in range(n)]
            setattr(self, f"layer_{s}", nn.Sequential(*layers))
            cin = cout
        self.batchnorm = nn.BatchNorm2d(planes[3])
        self.relu = RefSwish()
        self.logits = nn.Linear(planes[3], num_classes)

    def forward(self, x):
        out = self.conv_2d((x - self.mean) / self.std)
        out = self.layer_3(self.layer_2(self.layer_1(self.layer_0(out))))
        out = F.avg_pool2d(self.relu(self.batchnorm(out)), 4)
        return self.logits(out.view(out.size(0), -1))


def randomised(module: nn.Module, seed: int) -> nn.Module:
    """Random weights and BatchNorm statistics (so that eval-mode normalisation is exercised)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, nn.BatchNorm2d):
                sub.weight.uniform_(0.5, 1.5)
                sub.bias.normal_(0, 0.1)
                sub.running_mean.normal_(0, 0.1)
                sub.running_var.uniform_(0.5, 1.5)
                sub.num_batches_tracked.fill_(7)
    return module.eval()


def robustbench_file(tmp_path, reference: nn.Module, container: str | None) -> str:
    state = {f"module.{key}": value for key, value in reference.state_dict().items()}
    path = tmp_path / "robustbench.pt"
    torch.save({container: state, "epoch": 3} if container else state, path)
    return str(path)


def assert_same_logits(ours: nn.Module, reference: nn.Module) -> None:
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = reference(x)
        got = ours.eval()(x)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("container", ["state_dict", "model_state_dict", None])
def test_dm_wide_resnet_checkpoint_gives_identical_logits(tmp_path, container):
    reference = randomised(RefDMWideResNet(10, depth=10, width=2, mean=CIFAR10_MEAN, std=(0.2, 0.3, 0.25)), 0)
    ours = models.load_weights(models.create("dm-wrn-10-2"), robustbench_file(tmp_path, reference, container))
    assert_same_logits(ours, reference)
    assert torch.allclose(ours.std.flatten(), torch.tensor([0.2, 0.3, 0.25]))


def test_dm_wide_resnet_deeper_groups_and_cifar100_constants(tmp_path):
    reference = randomised(RefDMWideResNet(100, depth=16, width=1, mean=CIFAR100_MEAN, std=CIFAR100_STD), 1)
    ours = models.create("dm-wrn-16-1", num_classes=100)
    assert torch.allclose(ours.mean.flatten(), torch.tensor(CIFAR100_MEAN))  # the architecture's own constants
    models.load_weights(ours, robustbench_file(tmp_path, reference, "state_dict"))
    assert_same_logits(ours, reference)


def test_dm_checkpoint_without_statistics_keeps_the_architecture_constants(tmp_path):
    reference = randomised(RefDMWideResNet(10, depth=10, width=1, mean=CIFAR10_MEAN, std=(0.2471, 0.2435, 0.2616)), 2)
    state = {k: v for k, v in reference.state_dict().items() if k not in ("mean", "std")}
    path = tmp_path / "no_stats.pt"
    torch.save(state, path)
    ours = models.load_weights(models.create("dm-wrn-10-1"), path)
    assert_same_logits(ours, reference)


def test_dm_preact_resnet_checkpoint_gives_identical_logits(tmp_path):
    planes = (8, 16, 32, 64)
    reference = randomised(RefDMPreActResNet(10, planes, (2, 2, 2, 2), CIFAR10_MEAN, (0.2471, 0.2435, 0.2616)), 3)
    ours = models.create("dm-preact-resnet-18", width=0.125)
    models.load_weights(ours, robustbench_file(tmp_path, reference, "state_dict"))
    assert_same_logits(ours, reference)
    logits, feats = ours.forward_features(torch.rand(2, 3, 32, 32))
    assert feats.shape == (2, 64) and torch.allclose(ours.head(feats), logits)


@pytest.mark.parametrize("sub_block1, bias_last", [(True, True), (False, False)])
def test_robustbench_standard_wide_resnet_gives_identical_logits(tmp_path, sub_block1, bias_last):
    reference = randomised(RefWideResNet(10, 10, 2, sub_block1=sub_block1, bias_last=bias_last), 4)
    ours = models.load_weights(models.create("wrn-10-2"), robustbench_file(tmp_path, reference, "state_dict"))
    assert_same_logits(ours, reference)
    assert torch.equal(ours.mean, torch.zeros(1, 3, 1, 1))  # RobustBench's WideResNet takes [0, 1] inputs


def test_wrong_architecture_for_a_dm_checkpoint_is_a_clear_error(tmp_path):
    reference = randomised(RefDMWideResNet(10, depth=10, width=2, mean=CIFAR10_MEAN, std=CIFAR10_MEAN), 0)
    path = robustbench_file(tmp_path, reference, "state_dict")
    with pytest.raises(CheckpointError, match="shapes differ"):
        models.load_weights(models.create("dm-wrn-10-1"), path)
    with pytest.raises(CheckpointError, match="keys do not match"):
        models.load_weights(models.create("wrn-10-2"), path)


def test_dm_names_and_options_are_validated():
    assert models.resolve("DM-WRN-70-16") == "dm-wrn-70-16"
    assert models.create("dm-wrn-10-1", activation="relu").spec["kwargs"] == {"activation": "relu"}
    with pytest.raises(ConfigError, match="dm-wrn-D-K needs"):
        models.create("dm-wrn-11-2")
    with pytest.raises(ConfigError, match="activation must be one of"):
        models.create("dm-wrn-10-1", activation="gelu")
    with pytest.raises(ConfigError, match="fixes depth"):
        models.create("dm-wrn-10-1", depth=16)
    grey = models.create("dm-preact-resnet-18", in_channels=1, width=0.125)
    assert torch.equal(grey.mean, torch.zeros(1, 1, 1, 1))  # no RGB constants for other inputs


def test_saved_dm_model_round_trips(tmp_path):
    model = randomised(models.create("dm-wrn-10-1", num_classes=100), 6)
    models.save(model, tmp_path / "t.safetensors")
    again = models.load(tmp_path / "t.safetensors")
    assert_same_logits(again, model)
    assert torch.allclose(again.mean.flatten(), torch.tensor(CIFAR100_MEAN))


def test_foreign_teacher_is_built_from_teacher_arch(tmp_path, digits_train):
    reference = randomised(RefDMWideResNet(10, depth=10, width=1, mean=CIFAR10_MEAN, std=CIFAR10_MEAN), 7)
    path = robustbench_file(tmp_path, reference, "state_dict")
    teacher = runs.load_foreign_teacher(path, "dm-wrn-10-1", in_channels=3, num_classes=10)
    assert not teacher.training and teacher.arch == "dm-wrn-10-1"
    assert_same_logits(teacher, reference)
    other = runs.load_foreign_teacher(path, "dm-wrn-10-1", in_channels=3, num_classes=100)
    assert other.num_classes == 10  # the checkpoint's head decides (cross-task methods accept it)


def test_distill_from_a_robustbench_file_with_teacher_arch(tmp_path):
    reference = randomised(RefDMWideResNet(10, depth=10, width=1, mean=(0.5,), std=(0.25,), num_input_channels=1), 8)
    path = robustbench_file(tmp_path, reference, "state_dict")
    args = ["distill", *SMALL, "--method", "kd", "--teacher", path, "teacher_arch=dm-wrn-10-1"]
    outcome = run_cli([*args, "--run-dir", str(tmp_path / "run")])
    assert outcome.code == 0, outcome.stderr
    assert models.load(tmp_path / "run" / "model.safetensors").arch == "smallcnn"
    refused = run_cli(["distill", *SMALL, "--method", "kd", "--teacher", path, "--run-dir", str(tmp_path / "no")])
    assert refused.code != 0 and "teacher_arch=NAME" in refused.lines()[-1]
