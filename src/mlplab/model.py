"""The network under study: a small multi-layer perceptron. Plain torch, no Lightning."""

from __future__ import annotations

from torch import Tensor, nn


class MLP(nn.Module):
    """Linear → activation → … → Linear; one hidden layer unless told otherwise.

    The activation arrives as a module (built from config), so swapping ReLU for Tanh is a
    config change, not a code change. The same instance is reused between hidden layers:
    the activations we offer carry no parameters.
    """

    def __init__(
        self,
        in_features: int,
        hidden: int,
        out_features: int,
        activation: nn.Module,
        num_hidden_layers: int = 1,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(num_hidden_layers):
            layers += [nn.Linear(width, hidden), activation]
            width = hidden
        layers.append(nn.Linear(width, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """(batch, in_features) → (batch, out_features): raw outputs (logits for classifiers)."""
        return self.net(x)
