"""Analytical cost model of the hls4ml io_parallel / Latency-strategy project, in which every pixel
is computed in parallel (an estimate, not a vendor report). The design that fits a device is the
pixel-streaming open RTL: its cycles come from simulation (``nqec fpga rtlsim``) and its
resources from yosys (``nqec fpga synth-open``)."""

from __future__ import annotations

import math

from fpga.fixed import ConvLayer

DSP_WEIGHT_BITS = 7  # narrower weight x activation products map to LUTs rather than DSP slices


def estimate(layers: list[ConvLayer], input_shape: tuple[int, int, int], reuse_factor: int = 1,
             clock_ns: float = 4.0) -> dict:
    """Multiplications, parameters, bit widths and a latency estimate in cycles for one round window."""
    _, height, width = input_shape
    rows, multiplications, cycles = [], 0, 2  # input and output registers
    for layer in layers:
        out_channels, in_channels, k, _ = layer.weight.shape
        fan_in = in_channels * k * k
        mults = height * width * out_channels * fan_in
        layer_cycles = reuse_factor + math.ceil(math.log2(fan_in)) + 2  # multiply, adder tree, cast/ReLU
        multiplications += mults
        cycles += layer_cycles
        rows.append({"layer": layer.name, "multiplications": mults, "parameters": int(layer.weight.size + layer.bias.size),
                     "weight": str(layer.weight_type), "result": str(layer.result_type), "accum": str(layer.accum_type),
                     "cycles": layer_cycles})
    parallel_multipliers = math.ceil(multiplications / reuse_factor)
    uses_dsp = any(layer.weight_type.width > DSP_WEIGHT_BITS for layer in layers)
    return {
        "label": "ESTIMATE of the all-pixels-parallel hls4ml project; confirm with a vendor report (nqec fpga "
                 "report). The pixel-streaming open RTL's measured cycles and yosys resources: nqec fpga rtlsim, "
                 "synth-open",
        "layers": rows,
        "multiplications_per_window": multiplications,
        "parameters": sum(row["parameters"] for row in rows),
        "reuse_factor": reuse_factor,
        "latency_cycles": cycles,
        "latency_ns": cycles * clock_ns,
        "clock_ns": clock_ns,
        "meets_1us_per_round": cycles * clock_ns <= 1000,
        "parallel_multipliers": parallel_multipliers,
        "dsp_estimate": parallel_multipliers if uses_dsp else 0,
    }
