"""The MLP: shapes, depth, and no framework inside."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from mlplab.model import MLP


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_mlp_maps_batches_to_outputs(layers: int) -> None:
    model = MLP(5, 16, 3, nn.Tanh(), num_hidden_layers=layers)
    assert model(torch.randn(7, 5)).shape == (7, 3)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (5, 16),
        *[(16, 16)] * (layers - 1),
        (16, 3),
    ]


def test_default_is_linear_activation_linear() -> None:
    model = MLP(4, 8, 1, nn.GELU())
    assert [type(m) for m in model.net] == [nn.Linear, nn.GELU, nn.Linear]


def test_model_module_imports_no_lightning() -> None:
    code = "import sys, mlplab.model; print('lightning' in sys.modules or 'hydra' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_lightning_module_attributes_behave_as_on_any_nn_module() -> None:
    # MLPModule sets Lightning's hook name with a shortcut; everything else must still
    # register as nn.Module registers it.
    from mlplab.module import MLPModule

    module = MLPModule(MLP(2, 3, 1, nn.ReLU()), "regression", None, None)
    module._current_fx_name = "training_step"
    module.extra_layer = nn.Linear(2, 2)
    module.scale = nn.Parameter(torch.ones(1))
    assert module._current_fx_name == "training_step"
    assert "extra_layer" in dict(module.named_children())
    assert "scale" in dict(module.named_parameters())
    assert "_current_fx_name" not in module._modules | module._parameters | module._buffers
