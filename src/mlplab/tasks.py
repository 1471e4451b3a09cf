"""What each learning task means: its loss, its output size, its scores.

Both training engines (Lightning and the raw loop) take these from here, so they cannot
disagree on what is being optimised or measured.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import BinaryAccuracy, MulticlassAccuracy
from torchmetrics.regression import MeanSquaredError, R2Score

TASKS = ("regression", "classification", "binary")

# Mean-reduced losses. Targets are stored in the shape each loss wants: regression and
# binary targets are float (n, 1) like the model output; class labels are int64 (n,).
LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "regression": F.mse_loss,
    "classification": F.cross_entropy,
    "binary": F.binary_cross_entropy_with_logits,
}

# The metric a sweep is judged by, besides the loss (logged as val/<name>, test/<name>).
SCORE_NAMES = {"regression": "r2", "classification": "acc", "binary": "acc"}


def loss_function(task: str) -> Callable[[Tensor, Tensor], Tensor]:
    """The loss both engines minimise for `task`."""
    return LOSSES[task]


def build_scores(task: str, out_features: int) -> MetricCollection:
    """The task's torchmetrics: MSE and R² for regression, accuracy for classifiers.

    `out_features` is the model's output width: for classification, the number of classes.
    """
    if task == "regression":
        return MetricCollection({"mse": MeanSquaredError(), "r2": R2Score()})
    if task == "binary":
        return MetricCollection({"acc": BinaryAccuracy()})
    return MetricCollection({"acc": MulticlassAccuracy(num_classes=out_features, average="micro")})


class EpochMetrics(nn.Module):
    """Loss and scores accumulated over one pass of a loader, named `<prefix>/<metric>`.

    The loss is a sample-weighted mean, so a short last batch counts for what it holds.
    """

    def __init__(self, task: str, out_features: int, prefix: str) -> None:
        super().__init__()
        self.task = task
        self.prefix = prefix
        self.loss_fn = loss_function(task)
        self.loss = MeanMetric()
        self.scores = build_scores(task, out_features)

    def update(self, output: Tensor, target: Tensor) -> None:
        """Add one batch: the model's output and its targets."""
        self.loss.update(self.loss_fn(output, target), weight=target.shape[0])
        if self.task == "binary":
            # BinaryAccuracy would guess whether it got logits; tell it.
            output, target = output.sigmoid(), target.long()
        self.scores.update(output, target)

    def compute(self) -> dict[str, Tensor]:
        """The epoch's values as `{"val/loss": …, "val/r2": …}`."""
        values = {"loss": self.loss.compute(), **self.scores.compute()}
        return {f"{self.prefix}/{name}": value for name, value in values.items()}

    def reset(self) -> None:
        """Forget everything seen so far, ready for the next epoch."""
        self.loss.reset()
        self.scores.reset()
