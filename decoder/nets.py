"""PyTorch definitions of the neural decoders (training and export only; serving uses ONNX)."""

from __future__ import annotations

import torch
from torch import nn


class PreDecoderCNN(nn.Module):
    """Fully convolutional pre-decoder: ``[N, 2 * window, H, W]`` -> edge logits ``[N, D, H, W]``.

    Conv2d + ReLU only (hls4ml-convertible): ``depth - 1`` ``kernel x kernel`` convolutions of
    ``width`` channels, then a 1x1 convolution to one logit per direction.
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
