"""docs/questions.md: each answer's demonstration (docs/demos.py) runs here, showing its effect."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from docs import demos
from mlplab.build import build_model
from mlplab.config import problems
from mlplab.fit import fit_raw
from mlplab.model import MLP
from mlplab.module import MLPModule


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: one thread is faster than two, and immune to a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- Why optimizer.zero_grad() every iteration? ------------------------------------------------


def test_backward_adds_into_grad_until_it_is_zeroed() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    batches = [(torch.randn(8, 4), torch.randn(8, 1)) for _ in range(3)]
    each = [demos.gradient_after(model, [batch], zero_grad=True) for batch in batches]
    assert torch.equal(demos.gradient_after(model, batches, zero_grad=True), each[-1])
    model.zero_grad()
    assert torch.equal(demos.gradient_after(model, batches, zero_grad=False), sum(each))


def test_without_zero_grad_the_loss_climbs_while_the_textbook_loop_learns() -> None:
    cfg = demos.job_config(*demos.ZERO_GRAD)
    curves = demos.loss_curves(cfg)
    normal, stale = curves["with zero_grad"], curves["without zero_grad"]
    assert torch.equal(normal, fit_raw(cfg, []).step_losses)  # `python train.py engine=raw …`'s
    assert torch.equal(normal[:2], stale[:2])  # nothing stale to add before the second step
    first, last = slice(0, 10), slice(-10, None)  # the first and the last epoch
    assert normal[last].mean() < normal[first].mean()
    assert stale[last].mean() > stale[first].mean()
    assert stale[last].mean() > 2 * normal[last].mean()


# --- When is SGD preferred over Adam? ----------------------------------------------------------


def test_sgd_keeps_no_state_momentum_one_copy_adam_two() -> None:
    model = MLP(8, 16, 1, nn.ReLU())
    size = sum(p.numel() for p in model.parameters())
    optimizers = {
        "sgd": torch.optim.SGD(model.parameters(), lr=0.1),
        "sgd+momentum": torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        "adam": torch.optim.Adam(model.parameters()),
    }
    model(torch.randn(4, 8)).sum().backward()
    for optimizer in optimizers.values():
        optimizer.step()  # each creates its state on its first step
    state = {name: demos.optimizer_state_numbers(o) for name, o in optimizers.items()}
    assert state == {"sgd": 0, "sgd+momentum": size, "adam": 2 * size}


def test_adams_steps_ignore_the_gradients_scale_sgds_do_not() -> None:
    weights = {}
    for optimizer in ("adam", "sgd"):
        cfg = demos.job_config(f"optimizer={optimizer}", *demos.SHORT, "trainer.max_steps=20")
        weights[optimizer] = [demos.weights_after(cfg, scale) for scale in (1.0, 1000.0)]
    start = torch.cat([p.detach().flatten() for p in build_model(cfg).parameters()])
    adam, sgd = weights["adam"], weights["sgd"]
    moved = (adam[0] - start).abs().max()
    assert (adam[1] - adam[0]).abs().max() < 1e-3 * moved  # only eps sees the scale
    assert torch.isfinite(sgd[0]).all() and not torch.isfinite(sgd[1]).all()  # 1000× the step


def test_lr_grid_sgd_diverges_where_adam_does_not_and_adam_ends_lower() -> None:
    grid = demos.lr_grid(demos.LRS, *demos.SHORT)
    sgd, adam = grid["sgd"], grid["adam"]
    assert sgd[-1] == math.inf and math.isfinite(adam[-1])  # lr 1: SGD's step is lr × gradient
    assert all(math.isfinite(loss) for loss in sgd[:-1])
    assert min(adam) < min(sgd)  # best of the grid, at this short budget


# --- nn.Module or nn.Sequential? ---------------------------------------------------------------


def test_mlp_as_a_sequential_and_as_a_module_give_equal_outputs() -> None:
    mlplab_mlp = build_model(demos.job_config("model.hidden=16"))  # a Module holding a Sequential
    sequential, module = demos.sequential_mlp(8, 16, 1), demos.HandWrittenMLP(8, 16, 1)
    sequential.load_state_dict(mlplab_mlp.net.state_dict())
    demos.load_from_sequential(module, sequential)
    x = torch.randn(32, 8)
    assert torch.equal(sequential(x), mlplab_mlp(x))
    assert torch.equal(module(x), mlplab_mlp(x))


def test_only_the_module_can_hand_back_its_hidden_activations() -> None:
    sequential, module = demos.sequential_mlp(8, 16, 1), demos.HandWrittenMLP(8, 16, 1)
    demos.load_from_sequential(module, sequential)
    x = torch.randn(32, 8)
    output, hidden = module(x, return_hidden=True)
    assert torch.equal(output, sequential(x))
    assert torch.equal(hidden, sequential[:2](x))  # a Sequential's nearest: slice it, run again
    with pytest.raises(TypeError, match="return_hidden"):
        sequential(x, return_hidden=True)


# --- Tensors split across devices ---------------------------------------------------------------


def test_a_forward_across_devices_fails_naming_both() -> None:
    error = demos.mixed_device_error()
    assert isinstance(error, RuntimeError)
    assert "meta" in str(error) and "cpu" in str(error)


def test_a_0_dim_cpu_tensor_is_the_one_exception() -> None:
    on_meta = torch.ones(3, device="meta")
    assert (torch.tensor(2.0) * on_meta).device.type == "meta"  # a scalar is copied along
    with pytest.raises(RuntimeError, match="meta"):
        torch.tensor([2.0]) * on_meta


def test_the_raw_loop_trains_only_because_it_moves_each_batch() -> None:
    cfg = demos.job_config(*demos.SHORT, "trainer.max_steps=3")
    assert demos.train_on_meta(cfg, "meta").device.type == "meta"
    with pytest.raises(RuntimeError, match=r"meta.*cpu"):
        demos.train_on_meta(cfg, "cpu")  # batches left where the DataModule made them


def test_lightning_moves_each_batch_to_the_modules_device() -> None:
    module = MLPModule(MLP(8, 16, 1, nn.ReLU()), "regression", 1, optimizer=None)
    batch = module.transfer_batch_to_device(
        (torch.randn(4, 8), torch.randn(4, 1)), torch.device("meta"), dataloader_idx=0
    )
    assert [t.device.type for t in batch] == ["meta", "meta"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cpu_and_cuda_tensors_refuse_to_mix() -> None:
    layer = nn.Linear(3, 2).cuda()
    with pytest.raises(RuntimeError, match="same device") as caught:
        layer(torch.randn(4, 3))
    assert "cuda" in str(caught.value) and "cpu" in str(caught.value)


# --- What a dynamic graph allows ---------------------------------------------------------------


def dynamic_model() -> demos.DynamicDepthMLP:
    torch.manual_seed(0)
    return demos.DynamicDepthMLP(8, 16, 1, nn.Tanh(), num_hidden_layers=4)


def test_each_sample_gets_the_depth_its_input_asks_for_and_gradients_follow_it() -> None:
    model = dynamic_model()
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    depth = model.depth(x)
    assert set(depth.tolist()) == {1, 2, 3, 4}
    shallow, deep = int((depth == 1).nonzero()[0]), int((depth == 4).nonzero()[0])
    for sample, reaches_block in ((shallow, False), (deep, True)):
        model.zero_grad()
        model(x)[sample].sum().backward()
        assert bool(model.block.weight.grad.abs().sum() > 0) == reaches_block
    model.zero_grad(set_to_none=True)
    model(x[depth == 1]).sum().backward()  # a batch of shallow samples: no block in the graph
    assert model.block.weight.grad is None and model.first.weight.grad is not None


def test_a_dynamic_depth_mlp_trains_end_to_end_in_mlplab() -> None:
    cfg = demos.job_config(
        "model._target_=docs.demos.DynamicDepthMLP", "model.num_hidden_layers=4", *demos.SHORT
    )
    assert problems(cfg) == []  # `python train.py model._target_=…` accepts it
    result = fit_raw(cfg, [])
    losses = result.step_losses
    assert losses[-10:].mean() < 0.8 * losses[:10].mean()
    model = result.model
    x = torch.randn(256, 8, generator=torch.Generator().manual_seed(1))
    assert int(model.depth(x).max()) == 4
    model.zero_grad(set_to_none=True)
    model(x).pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
