"""Bundle -> hls4ml project (PyTorch frontend, Vitis backend, io_parallel, Latency strategy).

Precision ``auto`` profiles weights and activations on Stim windows and picks, per layer,
integer bits that cannot overflow; accumulators are wide enough to be exact, so the only
rounding happens where each layer's result is stored (AP_RND, AP_SAT). Weights are put on
their fixed-point grid before conversion, which makes the numpy emulation bit-exact.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from decoder.bundle import Bundle
from decoder.errors import NqecError
from decoder.nets import PreDecoderCNN, network_from_bundle
from fpga.fixed import ConvLayer, FixedType, conv2d_same, emulate, integer_bits_for

WEIGHT_BITS = 10
ACTIVATION_BITS = 16
INPUT_TYPE = FixedType(2, 2)  # detection events are 0 or 1
DEFAULT_PART = "xcvu13p-flga2577-2-e"


@dataclasses.dataclass
class FpgaDesign:
    """A converted pre-decoder: the hls4ml model (if built), its fixed-point layers and settings."""

    bundle: Bundle
    layers: list[ConvLayer]
    input_type: FixedType
    settings: dict
    hls_model: object | None = None

    def emulate(self, windows: np.ndarray) -> np.ndarray:
        return emulate(self.layers, self.input_type, windows)

    def csim(self, windows: np.ndarray) -> np.ndarray:
        """hls4ml's compiled C simulation; output reshaped to ``[N, D, H, W]`` like the float model."""
        flat = self.hls_model.predict(np.ascontiguousarray(windows, dtype=np.float32))
        n, _, height, width = windows.shape
        return np.asarray(flat, dtype=np.float64).reshape(n, height, width, -1).transpose(0, 3, 1, 2)


def load_torch_model(bundle: Bundle) -> PreDecoderCNN:
    if bundle.kind != "predecoder":
        raise NqecError(f"the FPGA flow takes a predecoder bundle; {bundle.name!r} is a {bundle.kind}")
    return network_from_bundle(bundle)


def stim_windows(bundle: Bundle, shots: int, seed: int, distance: int | None = None) -> np.ndarray:
    """Round windows of Stim shots at the bundle's spec (or at another distance, rounds = distance):
    the FPGA's real inputs."""
    spec = None if distance is None else dataclasses.replace(bundle.spec, distance=distance, rounds=distance)
    return bundle.stim_inputs(shots, seed, spec)[0]


def fixed_point_layers(bundle: Bundle, precision: str = "auto", profile_shots: int = 2000,
                       seed: int = 0) -> list[ConvLayer]:
    """The bundle's network on fixed-point grids (``auto``: profiled on Stim windows at its spec)."""
    return choose_layers(load_torch_model(bundle), stim_windows(bundle, profile_shots, seed), precision)


def _convs(model: PreDecoderCNN) -> list[tuple[str, torch.nn.Conv2d, bool]]:
    modules = list(model.net)
    return [(f"net_{i}", m, i + 1 < len(modules) and isinstance(modules[i + 1], torch.nn.ReLU))
            for i, m in enumerate(modules) if isinstance(m, torch.nn.Conv2d)]


def choose_layers(model: PreDecoderCNN, windows: np.ndarray, precision: str = "auto") -> list[ConvLayer]:
    """Per-layer fixed-point types (profiled on ``windows`` for ``auto``) and quantized weights."""
    fixed = None if precision == "auto" else FixedType.parse(precision)
    layers, x, in_type = [], INPUT_TYPE.quantize(windows), INPUT_TYPE
    for name, conv, relu in _convs(model):
        weight = conv.weight.detach().double().numpy()
        bias = conv.bias.detach().double().numpy()
        if fixed is None:
            weight_type = FixedType(WEIGHT_BITS, integer_bits_for(np.abs(weight).max()), "AP_RND", "AP_SAT")
        else:
            weight_type = FixedType(fixed.width, fixed.integer, "AP_RND", "AP_SAT")
        weight_q = weight_type.quantize(weight)
        fan_in = weight.shape[1] * weight.shape[2] * weight.shape[3]
        frac = weight_type.fractional + in_type.fractional
        max_sum = fan_in * 2.0 ** (weight_type.integer - 1) * 2.0 ** (in_type.integer - 1) + np.abs(bias).max()
        accum_type = FixedType(integer_bits_for(max_sum) + frac, integer_bits_for(max_sum))
        bias_q = accum_type.quantize(bias)
        pre_activation = conv2d_same(x, weight_q) + bias_q[None, :, None, None]
        if fixed is None:
            result_type = FixedType(ACTIVATION_BITS, integer_bits_for(1.25 * np.abs(pre_activation).max()), "AP_RND", "AP_SAT")
        else:
            result_type = FixedType(fixed.width, fixed.integer, "AP_RND", "AP_SAT")
        layer = ConvLayer(name, weight_q, bias_q, weight_type, accum_type, result_type, relu)
        layers.append(layer)
        x = emulate([layer], in_type, x)
        in_type = result_type
    return layers


def hls_config(model: PreDecoderCNN, layers: list[ConvLayer], input_shape: tuple[int, int, int], reuse_factor: int) -> dict:
    import hls4ml

    config = hls4ml.utils.config_from_pytorch_model(model, input_shape=input_shape, granularity="name",
                                                    backend="Vitis", default_precision=str(layers[0].result_type),
                                                    default_reuse_factor=reuse_factor)
    config["Model"]["Strategy"] = "Latency"
    by_name = {layer.name: layer for layer in layers}
    for name, layer_config in config["LayerName"].items():
        if name in by_name:
            layer = by_name[name]
            layer_config["Precision"] = {"weight": str(layer.weight_type), "bias": str(layer.accum_type),
                                         "accum": str(layer.accum_type), "result": str(layer.result_type)}
            layer_config["ReuseFactor"] = reuse_factor
        elif name.startswith("net_"):  # ReLU after conv net_{i-1}: keeps its input's type
            source = by_name[f"net_{int(name.split('_')[1]) - 1}"]
            layer_config["Precision"] = {"result": str(source.result_type)}
        else:  # the input
            layer_config["Precision"] = {"result": str(INPUT_TYPE)}
    return config


def convert(bundle_name: str, out: str | Path, part: str = DEFAULT_PART, clock_ns: float = 4.0,
            precision: str = "auto", reuse_factor: int = 1, profile_shots: int = 2000, seed: int = 0,
            compile_csim: bool = True) -> FpgaDesign:
    """Write the hls4ml project for a pre-decoder bundle to ``out`` and (optionally) compile its C simulation."""
    import hls4ml

    bundle = Bundle.load(bundle_name)
    model = load_torch_model(bundle)
    layers = fixed_point_layers(bundle, precision, profile_shots, seed)
    quantized = copy.deepcopy(model)
    with torch.no_grad():
        for (name, conv, _), layer in zip(_convs(quantized), layers):
            conv.weight.copy_(torch.from_numpy(layer.weight))
            conv.bias.copy_(torch.from_numpy(layer.bias))
    input_shape = (2 * bundle.manifest["predecoder"]["window"], *bundle.layout.shape[2:])
    config = hls_config(quantized, layers, input_shape, reuse_factor)
    out = Path(out)
    hls_model = hls4ml.converters.convert_from_pytorch_model(
        quantized, hls_config=config, output_dir=str(out), backend="Vitis", io_type="io_parallel", part=part,
        clock_period=clock_ns, project_name="predecoder")
    settings = {"bundle": bundle.name, "part": part, "clock_ns": clock_ns, "precision": precision,
                "reuse_factor": reuse_factor, "input_shape": list(input_shape), "profile_shots": profile_shots,
                "profile_seed": seed, "input_type": str(INPUT_TYPE),
                "layers": [{"name": l.name, "weight": str(l.weight_type), "accum": str(l.accum_type),
                            "result": str(l.result_type), "relu": l.relu} for l in layers]}
    design = FpgaDesign(bundle, layers, INPUT_TYPE, settings, hls_model)
    if compile_csim:
        hls_model.compile()
    else:
        hls_model.write()
    (out / "nqec_fpga.json").write_text(json.dumps(settings, indent=1) + "\n")
    return design
