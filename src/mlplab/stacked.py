"""R copies of one network trained as one: their weights stacked, every layer a batched product.

Replicas of one configuration differ only in their numbers (each seed's initial weights), not
in their shapes. Stacking each parameter of the R models along a new leading dimension turns
every `Linear` into one batched matrix product over the replicas: one call does the work of
R. Each replica's output depends on its own slice of the weights only, so the gradient of a
sum of per-replica losses gives each slice exactly its own gradient. Plain torch, no Lightning
(like `mlplab.model`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from mlplab.model import MLP


class StackedModels(nn.Module):
    """R models of one architecture as one module: parameter `name` has shape (R, *its shape).

    The parameters keep the names they have in one model (`net.0.weight`, …), registered on a
    copy of the first model, so optimizers, checkpoints and clipping see ordinary parameters,
    and `replica_state_dict(r)` is a state dict the plain model loads.

    mlplab's `MLP` runs layer by layer: each Linear as `torch.baddbmm` over the replicas, each
    other layer on the (R·batch, features) rows, as it would on one model's batch. Any other
    model runs under `torch.func.vmap` (slower: ~1 ms more per step for 16 replicas at 64/64).
    Models with buffers (BatchNorm's running statistics) are refused: the forward pass updates
    a buffer, which cannot be done for a stacked one.
    """

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        if buffers := [name for name, _ in models[0].named_buffers()]:
            raise ValueError(
                f"{type(models[0]).__name__} has buffers ({', '.join(buffers)}), which replicas "
                "cannot stack: train its seeds as separate jobs (replicas=1, seed=0,1,2 -m)"
            )
        params, _ = stack_module_state(list(models))
        self.replicas = len(models)
        self.stack = copy.deepcopy(models[0])  # the architecture, holding the stacked weights
        for name, value in params.items():
            owner, _, leaf = name.rpartition(".")
            setattr(self.stack.get_submodule(owner), leaf, nn.Parameter(value))
        self.layer_by_layer = type(models[0]) is MLP

    def forward(self, x: Tensor) -> Tensor:
        """(R, batch, …) → (R, batch, out): replica r's network applied to its own batch x[r]."""
        if self.layer_by_layer:
            return self.mlp_forward(x)
        params = dict(self.stack.named_parameters())
        # randomness="different": a model that draws while training (dropout) draws each
        # replica's own numbers from the global generator.
        return vmap(self.apply_one, randomness="different")(params, x)

    def mlp_forward(self, x: Tensor) -> Tensor:
        """`MLP.forward` (its `net`, in order) over all replicas at once."""
        for layer in self.stack.net:
            if isinstance(layer, nn.Linear):  # weight (R, out, in), bias (R, out)
                x = layer.bias.unsqueeze(1).baddbmm(x, layer.weight.transpose(1, 2))
            else:  # the activation, on rows as for one model: (R·batch, features)
                x = layer(x.flatten(0, 1)).unflatten(0, (self.replicas, -1))
        return x

    def apply_one(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        """One replica: the network with `params` (one slice of each stacked weight) on x."""
        return functional_call(self.stack, params, (x,))

    def replica_state_dict(self, r: int) -> dict[str, Tensor]:
        """Replica r's weights, as the plain model's `state_dict()` holds them."""
        return {name: value[r].detach().clone() for name, value in self.stack.state_dict().items()}

    def parameter_slices(self, r: int) -> list[Tensor]:
        """Replica r's slice of every parameter (views: writing to them changes the weights)."""
        return [parameter[r] for parameter in self.stack.parameters()]
