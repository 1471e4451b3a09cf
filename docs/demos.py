"""The course's questions, answered by running something: the demonstrations of docs/questions.md.

Each function below is one demonstration; `tests/test_questions.py` runs every one of them, so
the page cannot drift from what the code does. From the repository root, print one with
`python docs/demos.py <question>` (`--help` lists them). Not part of the package: nothing in
`mlplab` imports this file.
"""

from __future__ import annotations

import argparse
import math

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from mlplab import reference
from mlplab.build import build_datamodule, build_model, optimizer_factory
from mlplab.cli import CONFIG_DIR
from mlplab.fit import Diverged, fit_raw
from mlplab.tasks import loss_function

# A short job: 1000 samples (600 to train on, 10 batches of 64), 10 epochs = 100 steps.
SHORT = ["data.num_samples=1000", "trainer.max_epochs=10"]


def job_config(*overrides: str) -> DictConfig:
    """The config of `python train.py <overrides>`, minus its outputs (no logger, no checkpoint)."""
    quiet = ["logger=none", "trainer.enable_checkpointing=false", "paths.output_dir=unused"]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=[*overrides, *quiet])


# --- Why optimizer.zero_grad() every iteration? ------------------------------------------------


def gradient_after(
    model: nn.Module, batches: list[tuple[Tensor, Tensor]], zero_grad: bool
) -> Tensor:
    """The first parameter's `.grad` after one backward per batch, zeroed in between or not."""
    weight = next(model.parameters())
    for x, y in batches:
        if zero_grad:
            model.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()  # adds into weight.grad
    return weight.grad.clone()


def train_raw(
    cfg: DictConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_scale: float = 1.0,
    device: str = "cpu",
) -> Tensor:
    """Train with mlplab's raw loop on `cfg`'s data, epochs and steps; each step's loss."""
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    loss_fn = loss_function(cfg.data.task)
    losses: list[Tensor] = []
    reference.train(
        model,
        optimizer,
        lambda output, target: loss_scale * loss_fn(output, target),
        datamodule.train_dataloader(),
        max_epochs=cfg.trainer.max_epochs,
        max_steps=cfg.trainer.max_steps,
        on_step=lambda step, loss: losses.append(loss),
        device=device,
    )
    return torch.stack(losses)


def loss_curves(cfg: DictConfig) -> dict[str, Tensor]:
    """Per-step training loss of mlplab's raw loop, as written and without `zero_grad`.

    Same config, data, seed and batch order; the only difference is that the second run's
    optimizer ignores `zero_grad()`, so each step uses the sum of all gradients so far.
    """
    curves = {}
    for name in ("with zero_grad", "without zero_grad"):
        model = build_model(cfg)
        optimizer = optimizer_factory(cfg)(model.parameters())
        if name == "without zero_grad":
            optimizer.zero_grad = lambda set_to_none=True: None  # the step in question, skipped
        curves[name] = train_raw(cfg, model, optimizer)
    return curves


# --- When is SGD preferred over Adam? ----------------------------------------------------------


def final_val_loss(cfg: DictConfig) -> float:
    """val/loss at the end of the job (raw loop: by parity, Lightning's too); inf if it diverged."""
    try:
        return fit_raw(cfg, []).metrics["val/loss"]
    except Diverged:
        return math.inf


def lr_grid(lrs: list[float], *overrides: str) -> dict[str, list[float]]:
    """Final val/loss of SGD and of Adam at each learning rate, everything else equal.

    `python train.py -m optimizer=sgd,adam optimizer.lr=<lrs> <overrides>` runs the same jobs.
    """
    grid = {}
    for optimizer in ("sgd", "adam"):
        cfg = job_config("engine=raw", f"optimizer={optimizer}", *overrides)
        grid[optimizer] = [
            final_val_loss(OmegaConf.merge(cfg, {"optimizer": {"lr": lr}})) for lr in lrs
        ]
    return grid


def weights_after(cfg: DictConfig, loss_scale: float) -> Tensor:
    """All the weights, flat, after training on the loss multiplied by `loss_scale`."""
    model = build_model(cfg)
    train_raw(cfg, model, optimizer_factory(cfg)(model.parameters()), loss_scale=loss_scale)
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def optimizer_state_numbers(optimizer: torch.optim.Optimizer) -> int:
    """How many numbers the optimizer keeps besides the parameters (its tensors' elements)."""
    state = optimizer.state_dict()["state"].values()
    return sum(t.numel() for s in state for t in s.values() if t.dim() > 0)  # no step counters


# --- nn.Module or nn.Sequential? ---------------------------------------------------------------


def sequential_mlp(in_features: int, hidden: int, out_features: int) -> nn.Sequential:
    """The MLP as a stack: each layer's output is the next one's only input."""
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, out_features))


class HandWrittenMLP(nn.Module):
    """The same layers as `sequential_mlp`, with a forward of our own."""

    def __init__(self, in_features: int, hidden: int, out_features: int) -> None:
        super().__init__()
        self.hidden = nn.Linear(in_features, hidden)
        self.out = nn.Linear(hidden, out_features)

    def forward(self, x: Tensor, return_hidden: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """The output; with `return_hidden`, also the hidden activations (batch, hidden)."""
        h = torch.relu(self.hidden(x))
        y = self.out(h)
        return (y, h) if return_hidden else y


def load_from_sequential(module: HandWrittenMLP, sequential: nn.Sequential) -> None:
    """Copy the stack's weights: its layers are known by position, ours by name."""
    hidden, _, out = sequential
    module.hidden.load_state_dict(hidden.state_dict())
    module.out.load_state_dict(out.state_dict())


# --- Tensors split across devices ---------------------------------------------------------------


def mixed_device_error() -> RuntimeError:
    """The error of a forward pass whose weights are on one device and input on another.

    The `meta` device (shapes, no data) stands in for a GPU, so this runs on any machine.
    """
    layer = nn.Linear(3, 2, device="meta")
    try:
        layer(torch.randn(4, 3))  # the input is on the CPU
    except RuntimeError as error:
        return error
    raise AssertionError("a forward across devices ran")


def train_on_meta(cfg: DictConfig, device: str) -> Tensor:
    """mlplab's raw loop with the model on `meta`, told `device=`; the last step's loss.

    The DataModule serves CPU tensors; `reference.train` moves each batch to `device`.
    """
    model = build_model(cfg).to("meta")
    return train_raw(cfg, model, optimizer_factory(cfg)(model.parameters()), device=device)[-1]


# --- What a dynamic graph allows ---------------------------------------------------------------


class DynamicDepthMLP(nn.Module):
    """An MLP whose depth depends on each sample: the larger |x₀| (its first input), the deeper.

    The first hidden layer always runs; then one shared residual block runs `depth - 1`
    more times, 1 ≤ depth ≤ `num_hidden_layers`. The loop's length is read from the data at
    every forward pass (a Python `for`), and autograd differentiates whatever ran. Takes the
    MLP's arguments, so `model._target_=docs.demos.DynamicDepthMLP` trains it with mlplab.
    """

    def __init__(
        self,
        in_features: int,
        hidden: int,
        out_features: int,
        activation: nn.Module,
        num_hidden_layers: int = 3,
    ) -> None:
        super().__init__()
        self.max_depth = num_hidden_layers
        self.first = nn.Linear(in_features, hidden)
        self.block = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, out_features)
        self.activation = activation

    def depth(self, x: Tensor) -> Tensor:
        """(batch,) layers for each sample: 1 + ⌊1.5·|x₀|⌋, at most `max_depth`."""
        return (1 + (1.5 * x[:, 0].abs()).long()).clamp(max=self.max_depth)

    def forward(self, x: Tensor) -> Tensor:
        depth = self.depth(x)
        h = self.activation(self.first(x))
        for layer in range(1, int(depth.max())):  # as many passes as the deepest sample needs
            deeper = (depth > layer).unsqueeze(1)  # (batch, 1): who goes on
            h = torch.where(deeper, h + self.activation(self.block(h)), h)
        return self.out(h)


# --- python docs/demos.py <question> -----------------------------------------------------------


ZERO_GRAD = ["optimizer=sgd", "optimizer.lr=0.1", "data.num_samples=1000", "trainer.max_epochs=6"]
LRS = [0.001, 0.01, 0.1, 1.0]


def show_zero_grad() -> None:
    curves = loss_curves(job_config(*ZERO_GRAD))
    means = {name: curve.view(-1, 10).mean(dim=1) for name, curve in curves.items()}  # 10 steps
    print("mean training loss of each epoch (10 steps)")
    print("epoch  " + "  ".join(means))
    for epoch, row in enumerate(zip(*means.values(), strict=True)):
        print(f"{epoch:5}  {row[0]:14.3f}  {row[1]:17.3f}")


def show_sgd_vs_adam() -> None:
    grid = lr_grid(LRS, *SHORT)
    print("final val/loss (inf: diverged)")
    print("lr          sgd     adam")
    for lr, sgd, adam in zip(LRS, *grid.values(), strict=True):
        print(f"{lr:<6}  {sgd:7.3f}  {adam:7.3f}")


def show_module_vs_sequential() -> None:
    sequential, module = sequential_mlp(8, 16, 1), HandWrittenMLP(8, 16, 1)
    load_from_sequential(module, sequential)
    x = torch.randn(5, 8)
    print("equal outputs:", torch.equal(sequential(x), module(x)))
    print("hidden activations from the Module:", tuple(module(x, return_hidden=True)[1].shape))
    try:
        sequential(x, return_hidden=True)
    except TypeError as error:
        print("the Sequential:", error)


def show_devices() -> None:
    print(f"{type(mixed_device_error()).__name__}: {mixed_device_error()}")


DEMOS = {
    "zero_grad": show_zero_grad,
    "sgd_vs_adam": show_sgd_vs_adam,
    "module_vs_sequential": show_module_vs_sequential,
    "devices": show_devices,
}

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Print one of docs/questions.md's answers.")
    parser.add_argument("question", choices=DEMOS)
    DEMOS[parser.parse_args().question]()
