"""``ap_fixed`` types and a bit-exact numpy emulation of the pre-decoder's fixed-point arithmetic."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np

from decoder.errors import NqecError


@dataclasses.dataclass(frozen=True)
class FixedType:
    """``ap_fixed<width, integer, rounding, saturation>``: signed, ``width - integer`` fractional bits.

    Example:
        >>> t = FixedType(8, 3, rounding="AP_RND", saturation="AP_SAT")
        >>> t.quantize(np.array([0.3, 5.0, -9.0])).tolist()
        [0.3125, 3.96875, -4.0]
    """

    width: int
    integer: int
    rounding: str = "AP_TRN"
    saturation: str = "AP_WRAP"

    @property
    def fractional(self) -> int:
        return self.width - self.integer

    def __str__(self) -> str:
        if (self.rounding, self.saturation) == ("AP_TRN", "AP_WRAP"):
            return f"ap_fixed<{self.width},{self.integer}>"
        return f"ap_fixed<{self.width},{self.integer},{self.rounding},{self.saturation}>"

    @classmethod
    def parse(cls, text: str) -> "FixedType":
        match = re.fullmatch(r"\s*ap_fixed<\s*(\d+)\s*,\s*(-?\d+)\s*(?:,\s*(AP_\w+)\s*)?(?:,\s*(AP_\w+)\s*)?>\s*", text)
        if not match:
            raise NqecError(f"expected a precision like ap_fixed<16,6> or ap_fixed<16,6,AP_RND,AP_SAT>, got {text!r}")
        width, integer = int(match.group(1)), int(match.group(2))
        if not 1 <= width <= 64 or integer > width:
            raise NqecError(f"ap_fixed<{width},{integer}> needs 1 <= width <= 64 and integer bits <= width")
        return cls(width, integer, match.group(3) or "AP_TRN", match.group(4) or "AP_WRAP")

    def quantize(self, values: np.ndarray) -> np.ndarray:
        """Values as this type stores them (float64, exact)."""
        scaled = np.asarray(values, dtype=np.float64) * 2.0 ** self.fractional
        if self.rounding == "AP_RND":
            steps = np.floor(scaled + 0.5)
        elif self.rounding == "AP_TRN":
            steps = np.floor(scaled)
        else:
            raise NqecError(f"rounding mode {self.rounding} is not emulated; use AP_RND or AP_TRN")
        low, high = -(2 ** (self.width - 1)), 2 ** (self.width - 1) - 1
        if self.saturation == "AP_SAT":
            steps = np.clip(steps, low, high)
        elif self.saturation == "AP_WRAP":
            steps = (steps - low) % 2 ** self.width + low
        else:
            raise NqecError(f"overflow mode {self.saturation} is not emulated; use AP_SAT or AP_WRAP")
        return steps / 2.0 ** self.fractional


def integer_bits_for(max_abs: float) -> int:
    """Signed integer bits (sign included) that hold ``max_abs`` without overflow."""
    return max(1, math.floor(math.log2(max_abs)) + 2) if max_abs > 0 else 1


@dataclasses.dataclass
class ConvLayer:
    """One quantized convolution: weights ``[out, in, k, k]`` and biases already on their grids."""

    name: str
    weight: np.ndarray
    bias: np.ndarray
    weight_type: FixedType
    accum_type: FixedType
    result_type: FixedType
    relu: bool


def conv2d_same(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Exact 'same' convolution (zero padding) in float64: ``[N, C, H, W] x [O, C, k, k] -> [N, O, H, W]``."""
    k = weight.shape[-1]
    pad = k // 2
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    patches = np.lib.stride_tricks.sliding_window_view(padded, (k, k), axis=(2, 3))  # [N, C, H, W, k, k]
    return np.einsum("nchwij,ocij->nohw", patches, weight, optimize=True)


def emulate(layers: list[ConvLayer], input_type: FixedType, windows: np.ndarray) -> np.ndarray:
    """The fixed-point network, bit for bit as the HLS C simulation computes it (float64 values)."""
    x = input_type.quantize(windows)
    for layer in layers:
        y = conv2d_same(x, layer.weight) + layer.bias[None, :, None, None]
        x = layer.result_type.quantize(layer.accum_type.quantize(y))
        if layer.relu:
            x = np.maximum(x, 0.0)
    return x
