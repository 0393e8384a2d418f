"""The adversarial-examples figure: clean test images above their adversarial versions, with predictions.

>>> attack = attacks.PGD(model, eps=0.1)
>>> batch = adversarial_batch(model, test_data, attack, n=8)
>>> plot_adversarial_examples(model, test_data, attack, "examples.png", batch=batch)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from matplotlib.patches import Patch
from torch import Tensor, nn

from robustdistill.data import ArrayDataset, subset
from robustdistill.evaluate.plots import new_figure, save_png
from robustdistill.utils import resolve_device

__all__ = ["AdversarialBatch", "adversarial_batch", "plot_adversarial_examples"]

CORRECT_COLOR = "#1a9641"
WRONG_COLOR = "#d7191c"


def _attack_description(attack: Callable[..., Tensor]) -> str:
    name = type(attack).__name__
    eps = getattr(attack, "eps", None)
    steps = getattr(attack, "steps", None)
    parts = [f"{name}-{steps}" if isinstance(steps, int) and name == "PGD" else name]
    if isinstance(eps, (int, float)):
        parts.append(f"eps={eps:.4g}")
    return ", ".join(parts)


def _short(name: str, limit: int = 12) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


@dataclass(frozen=True)
class AdversarialBatch:
    """Clean images, their adversarial versions, labels and both predictions (all on the CPU)."""

    x: Tensor
    x_adv: Tensor
    y: Tensor
    pred_clean: Tensor
    pred_adv: Tensor

    @property
    def flipped_to_wrong(self) -> int:
        return int(((self.pred_clean == self.y) & (self.pred_adv != self.y)).sum())

    @property
    def flipped_to_right(self) -> int:
        """Wrong clean predictions that the attack made right: PGD raises the loss of the true class, which
        need not keep a wrong prediction wrong (the loss can rise while the arg-max moves to the label)."""
        return int(((self.pred_clean != self.y) & (self.pred_adv == self.y)).sum())


def adversarial_batch(
    model: nn.Module,
    data: ArrayDataset,
    attack: Callable[[Tensor, Tensor], Tensor],
    n: int = 8,
    *,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> AdversarialBatch:
    """Attack a fixed class-balanced subset of `n` images (`subset(data, n, seed)`); the model's mode is kept."""
    device = device if isinstance(device, torch.device) else resolve_device(device)
    chosen = subset(data, n, seed=seed)
    x = chosen.images.float().div(255).to(device)
    y = chosen.labels.to(device)
    was_training = model.training
    model.eval().to(device)
    try:
        x_adv = attack(x, y).detach()
        with torch.no_grad():
            pred_clean = model(x).argmax(dim=1).cpu()
            pred_adv = model(x_adv).argmax(dim=1).cpu()
    finally:
        model.train(was_training)
    return AdversarialBatch(x.cpu(), x_adv.cpu(), y.cpu(), pred_clean, pred_adv)


def plot_adversarial_examples(
    model: nn.Module,
    data: ArrayDataset,
    attack: Callable[[Tensor, Tensor], Tensor],
    path: str | os.PathLike[str],
    n: int = 8,
    class_names: Sequence[str] | None = None,
    *,
    seed: int = 0,
    device: str | torch.device | None = None,
    title: str | None = None,
    batch: AdversarialBatch | None = None,
) -> Path:
    """A 2-row grid: `n` clean test images (top) and their adversarial versions (bottom).

    Each column is titled with the true label; under each image the model's prediction, green when
    correct and red when wrong. The images are a fixed class-balanced subset (`subset(data, n, seed)`);
    `attack(x, y) -> x_adv` is any attack object (for example `attacks.PGD(model, eps=...)`), or pass
    the `batch` that `adversarial_batch` returned. 1-channel images are shown in grey scale; the title
    counts the predictions the attack flipped, wrong to right included.
    """
    batch = batch or adversarial_batch(model, data, attack, n, seed=seed, device=device)
    names = list(class_names or data.classes or [str(i) for i in range(data.num_classes)])
    x, x_adv, y, pred_clean, pred_adv = batch.x, batch.x_adv, batch.y, batch.pred_clean, batch.pred_adv
    count = x.shape[0]
    cell = 1.45  # inches per image; each row also needs room for the labels above and below it
    figure = new_figure(max(4.0, cell * count + 0.9), 2 * (cell + 0.6) + 1.2)
    axes = figure.subplots(2, count, squeeze=False)
    for row, (images, preds) in enumerate(((x, pred_clean), (x_adv, pred_adv))):
        for col in range(count):
            ax = axes[row][col]
            image = images[col]
            if image.shape[0] == 1:
                ax.imshow(image[0].numpy(), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            else:
                ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            correct = int(preds[col]) == int(y[col])
            ax.set_xlabel(f"pred: {_short(names[int(preds[col])])}", color=CORRECT_COLOR if correct else WRONG_COLOR)
            if row == 0:
                ax.set_title(f"true: {_short(names[int(y[col])])}", fontsize=9)
            if col == 0:
                ax.set_ylabel("clean" if row == 0 else "adversarial")
    correct_clean = int((pred_clean == y).sum())
    summary = f"the attack flips {batch.flipped_to_wrong} of the {correct_clean} correct clean predictions"
    if batch.flipped_to_right:
        summary += f", and turns {batch.flipped_to_right} wrong one(s) right (it maximises the loss, not the error)"
    figure.suptitle(
        (title or f"Clean (top) and adversarial (bottom) test images, {_attack_description(attack)}") + "\n" + summary,
        fontsize=10,
    )
    figure.legend(
        handles=[Patch(color=CORRECT_COLOR, label="prediction correct"), Patch(color=WRONG_COLOR, label="wrong")],
        loc="lower center",
        ncol=2,
        fontsize=8,
    )
    return save_png(figure, path, rect=(0, 0.07, 1, 1))
