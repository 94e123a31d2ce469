"""PyTorch definitions of the neural decoders (training and export only; serving uses ONNX)."""

from __future__ import annotations

import torch
from torch import nn


class PreDecoderCNN(nn.Module):
    """Fully convolutional pre-decoder: ``[N, 2 * window, H, W]`` -> edge logits ``[N, D, H, W]``.

    Conv2d + ReLU only (hls4ml-convertible): ``depth - 1`` ``kernel x kernel`` convolutions of
    ``width`` channels, then a 1x1 convolution to one logit per direction.

    >>> net = PreDecoderCNN(num_directions=14, **PREDECODER_SIZES["fpga"])
    >>> net(torch.zeros(5, 6, 4, 4)).shape  # window 3 x 2 stabilizer types, on d=3's 4 x 4 grid
    torch.Size([5, 14, 4, 4])
    """

    def __init__(self, num_directions: int, window: int = 3, width: int = 32, depth: int = 4, kernel: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 2 * window
        for _ in range(depth - 1):
            layers += [nn.Conv2d(channels, width, kernel, padding=kernel // 2), nn.ReLU()]
            channels = width
        layers.append(nn.Conv2d(channels, num_directions, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return self.net(windows)


PREDECODER_SIZES = {
    # name: (window, width, depth, kernel)
    "fpga": dict(window=3, width=20, depth=4, kernel=3),
    "accurate": dict(window=5, width=64, depth=6, kernel=3),
}


class TransformerDecoderNet(nn.Module):
    """Transformer over detector tokens: dense events ``[N, 2, T, H, W]`` -> observable logits ``[N, O]``.

    Each detector is a token embedding its event, its stabilizer (type and position) and its
    round; a learned summary token reads out one logit per logical observable.
    """

    def __init__(self, layout, num_observables: int = 1, dim: int = 64, layers: int = 3, heads: int = 4,
                 mlp: int = 128, dropout: float = 0.0):
        super().__init__()
        types, rounds, height, width = layout.shape
        self.register_buffer("flat_index", torch.as_tensor(layout.flat_index, dtype=torch.long), persistent=False)
        stabilizer = (layout.type_index * height + layout.y_index) * width + layout.x_index
        self.register_buffer("stabilizer_id", torch.as_tensor(stabilizer, dtype=torch.long), persistent=False)
        self.register_buffer("round_id", torch.as_tensor(layout.t_index, dtype=torch.long), persistent=False)
        self.stabilizer_embedding = nn.Embedding(types * height * width, dim)
        self.round_embedding = nn.Embedding(rounds, dim)
        self.event_embedding = nn.Linear(1, dim)
        self.summary = nn.Parameter(torch.zeros(1, 1, dim))
        block = nn.TransformerEncoderLayer(dim, heads, mlp, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_observables)

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        events = dense.flatten(1)[:, self.flat_index].unsqueeze(-1)  # [N, detectors, 1]
        tokens = self.event_embedding(events) + self.stabilizer_embedding(self.stabilizer_id) + self.round_embedding(self.round_id)
        tokens = torch.cat([self.summary.expand(len(tokens), -1, -1), tokens], dim=1)
        return self.head(self.norm(self.encoder(tokens)[:, 0]))


TRANSFORMER_SIZES = {
    "small": dict(dim=48, layers=3, heads=4, mlp=96),
    "base": dict(dim=96, layers=4, heads=4, mlp=192),
}


def make_network(kind: str, architecture: dict, layout, num_observables: int, num_directions: int = 0) -> nn.Module:
    """The untrained network of a model kind: ``predecoder`` needs ``num_directions``, ``transformer`` the layout."""
    if kind == "predecoder":
        return PreDecoderCNN(num_directions, **architecture)
    if kind == "transformer":
        return TransformerDecoderNet(layout, num_observables, **architecture)
    raise ValueError(f"model kind {kind!r} is not one of predecoder, transformer")


def network_from_bundle(bundle) -> nn.Module:
    """A bundle's trained network in torch (eval mode), from its ``model.pt``."""
    weights = bundle.path / "model.pt"
    if not weights.is_file():
        from decoder.errors import NqecError

        raise NqecError(f"bundle {bundle.path} has no model.pt; the torch network needs the trained weights")
    state = torch.load(weights, map_location="cpu", weights_only=False)
    model = make_network(bundle.kind, state["architecture"], bundle.layout, bundle.spec.circuit().num_observables,
                         len(state.get("directions", ())))
    model.load_state_dict(state["model"])
    return model.eval()
