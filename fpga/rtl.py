"""Open RTL of the pre-decoder: da4ml per-pixel kernels inside a pixel-streaming top.

Each convolution becomes one per-pixel kernel: da4ml turns its fixed-point function (a
constant matrix-vector product, the bias, AP_RND/AP_SAT rounding to the layer's result type
and the ReLU, exactly as :func:`fpga.fixed.emulate` computes them) into a pipelined
shift-and-add Verilog module. The top streams one pixel per clock through the layers; a
3x3 layer sees its neighbourhood through a line buffer (``nqec_window3x3``, a shift register
of two rows plus three pixels, zero outside the grid). The grid size is a parameter of
the top, so one design serves every distance up to the one it is instantiated for.

Stream interface of ``nqec_predecoder``: a round window enters as ``H*W`` pixels on
consecutive cycles (row-major, ``in_valid`` high; windows may be separated by any gap),
each pixel the window's event bits (channel ``c`` at bit ``c``). ``in_ready`` is always high:
the pipeline takes a pixel every cycle (II = 1 pixel, ``H*W`` cycles per window). Logits
leave in the same order on ``out_data`` (channel ``c`` at bits ``[c*OUT_BITS +: OUT_BITS]``,
two's complement with the last layer's fractional bits) with ``out_valid``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import shutil
from pathlib import Path

import numpy as np

from decoder.errors import NqecError
from fpga.fixed import ConvLayer, FixedType

TOP = "nqec_predecoder"
TESTBENCH = "nqec_tb"
LATENCY_CUTOFF = 5.0  # da4ml's delay units per pipeline stage (about one adder level each)


@dataclasses.dataclass(frozen=True)
class Format:
    """A uniform fixed-point bus element: ``signed`` bit, ``integer`` bits (sign excluded), ``fractional`` bits."""

    signed: bool
    integer: int
    fractional: int

    @property
    def width(self) -> int:
        return int(self.signed) + self.integer + self.fractional

    @classmethod
    def after(cls, layer: ConvLayer) -> "Format":
        """The format of a layer's stored result (non-negative after a ReLU)."""
        t: FixedType = layer.result_type
        return cls(not layer.relu, t.integer - 1, t.fractional)


@dataclasses.dataclass
class Kernel:
    """One layer's per-pixel kernel: its da4ml pipeline and how its bus is laid out."""

    name: str
    taps: int  # 9 for a 3x3 layer, 1 for 1x1
    in_channels: int
    out_channels: int
    input_format: Format
    output_format: Format
    element_formats: list[tuple[bool, int, int]]  # da4ml's own (signed, integer, fractional) per output
    latency: int  # cycles from a pixel's taps to its outputs
    cost: float  # da4ml's adder-bit cost estimate

    @property
    def raw_width(self) -> int:
        return sum(int(k) + i + f for k, i, f in self.element_formats)


def _trace_kernel(layer: ConvLayer, input_format: Format):
    """The da4ml combinational logic of one layer (inputs ordered tap-major, then channel)."""
    from da4ml.trace import FixedVariableArrayInput, comb_trace
    from da4ml.trace.ops import quantize, relu

    out_channels, in_channels, kh, kw = layer.weight.shape
    matrix = layer.weight.transpose(2, 3, 1, 0).reshape(kh * kw * in_channels, out_channels)
    inputs = FixedVariableArrayInput((kh * kw * in_channels,))
    x = quantize(inputs, int(input_format.signed), input_format.integer, input_format.fractional)
    result = layer.result_type
    y = quantize(x @ matrix + layer.bias, 1, result.integer - 1, result.fractional, "SAT", "RND")
    return comb_trace(inputs, relu(y) if layer.relu else y, keep_dead_inputs=True)


def build_kernels(layers: list[ConvLayer], input_format: Format, out: Path) -> list[Kernel]:
    """Write one pipelined da4ml kernel per layer under ``out/kernels`` and describe them."""
    from da4ml.codegen.rtl.rtl_model import RTLModel
    from da4ml.trace import to_pipeline
    from da4ml.types import minimal_kif

    kernels = []
    for index, layer in enumerate(layers):
        out_channels, in_channels, kh, kw = layer.weight.shape
        if (kh, kw) not in ((1, 1), (3, 3)):
            raise NqecError(f"the RTL top streams 1x1 and 3x3 convolutions; layer {layer.name} is {kh}x{kw}")
        comb = _trace_kernel(layer, input_format)
        with contextlib.redirect_stdout(io.StringIO()):
            pipeline = to_pipeline(comb, LATENCY_CUTOFF, verbose=False)
            RTLModel(pipeline, f"nqec_layer{index}", out / "kernels" / f"layer{index}", print_latency=False).write()
        formats = [tuple(minimal_kif(q)) for q in comb.out_qint]
        kernels.append(Kernel(f"nqec_layer{index}", kh * kw, in_channels, out_channels, input_format,
                              Format.after(layer), [(bool(k), int(i), int(f)) for k, i, f in formats],
                              len(pipeline.solutions) + 1, float(comb.cost)))
        input_format = Format.after(layer)
    return kernels


def _widen(kernel: Kernel) -> str:
    """Verilog assigns that put each da4ml output (its own minimal format) on the uniform output bus."""
    lines, offset, fmt = [], 0, kernel.output_format
    for channel, (signed, integer, fractional) in enumerate(kernel.element_formats):
        width = int(signed) + integer + fractional
        target = f"y[{channel * fmt.width} +: {fmt.width}]"
        if width == 0:
            lines.append(f"    assign {target} = {fmt.width}'d0;")
            continue
        shift = fmt.fractional - fractional
        if shift < 0:
            raise NqecError(f"kernel {kernel.name} output {channel} has {fractional} fractional bits, "
                            f"more than the layer's {fmt.fractional}")
        top = offset + width - 1
        fill = f"raw[{top}]" if signed else "1'b0"
        lines.append(f"    assign {target} = {{{{{fmt.width}{{{fill}}}}}, raw[{top}:{offset}]}} << {shift};")
        offset += width
    return "\n".join(lines)


def _layer_module(kernel: Kernel) -> str:
    """A streaming stage: (window of) pixels in, the kernel, outputs widened to the uniform bus."""
    in_bits = kernel.in_channels * kernel.input_format.width
    out_bits = kernel.out_channels * kernel.output_format.width
    if kernel.taps == 9:
        front = f"""    wire taps_valid;
    wire [{9 * in_bits - 1}:0] taps;
    nqec_window3x3 #(.H(H), .W(W), .CW({in_bits})) window (
        .clk(clk), .rst(rst), .in_valid(in_valid), .in_data(in_data), .out_valid(taps_valid), .out_taps(taps));"""
    else:
        front = f"""    wire taps_valid = in_valid;
    wire [{in_bits - 1}:0] taps = in_data;"""
    return f"""module {kernel.name}_stage #(parameter H = 6, parameter W = 6) (
    input clk, input rst, input in_valid, input [{in_bits - 1}:0] in_data,
    output out_valid, output [{out_bits - 1}:0] out_data
);
{front}
    wire [{kernel.raw_width - 1}:0] raw;
    wire [{out_bits - 1}:0] y;
    {kernel.name} kernel (.clk(clk), .model_inp(taps), .model_out(raw));
{_widen(kernel)}
    reg [{kernel.latency - 1}:0] valid_delay;
    always @(posedge clk) valid_delay <= rst ? {kernel.latency}'d0 : {{valid_delay[{max(kernel.latency - 2, 0)}:0], taps_valid}};
    assign out_valid = valid_delay[{kernel.latency - 1}];
    assign out_data = y;
endmodule
"""


WINDOW_MODULE = """// A 3x3 neighbourhood of a pixel stream (row-major frames of H x W pixels on consecutive
// cycles): a shift register of 2W+3 pixels whose taps are the window, zero outside the grid.
// out_taps holds tap (dy, dx) at index (dy+1)*3 + (dx+1), each CW bits; one cycle after the
// centre's right-lower neighbour has arrived, i.e. W+2 cycles after the centre itself.
module nqec_window3x3 #(parameter H = 6, parameter W = 6, parameter CW = 1) (
    input clk, input rst, input in_valid, input [CW-1:0] in_data,
    output reg out_valid, output reg [9*CW-1:0] out_taps
);
    localparam N = 2 * W + 3;
    localparam CENTRE = W + 1;
    reg [CW-1:0] chain [0:N-1];
    reg [N-1:0] valid;
    reg [15:0] row, col;
    integer k, dy, dx;
    always @(posedge clk) begin
        chain[0] <= in_data;
        for (k = 1; k < N; k = k + 1) chain[k] <= chain[k-1];
        valid <= rst ? {N{1'b0}} : {valid[N-2:0], in_valid};
        out_valid <= !rst && valid[CENTRE];
        for (dy = -1; dy <= 1; dy = dy + 1)
            for (dx = -1; dx <= 1; dx = dx + 1)
                out_taps[((dy + 1) * 3 + dx + 1) * CW +: CW] <=
                    ($signed({1'b0, row}) + dy >= 0 && $signed({1'b0, row}) + dy < H &&
                     $signed({1'b0, col}) + dx >= 0 && $signed({1'b0, col}) + dx < W)
                    ? chain[CENTRE - dy * W - dx] : {CW{1'b0}};
        if (rst) begin
            row <= 0; col <= 0;
        end else if (valid[CENTRE]) begin
            col <= (col == W - 1) ? 16'd0 : col + 16'd1;
            if (col == W - 1) row <= (row == H - 1) ? 16'd0 : row + 16'd1;
        end
    end
endmodule
"""


def _top_module(kernels: list[Kernel], input_channels: int) -> str:
    wires, stages = [], []
    previous_valid, previous_data = "in_valid", "in_data"
    for index, kernel in enumerate(kernels):
        bits = kernel.out_channels * kernel.output_format.width
        wires.append(f"    wire v{index};\n    wire [{bits - 1}:0] d{index};")
        stages.append(f"    {kernel.name}_stage #(.H(H), .W(W)) s{index} (.clk(clk), .rst(rst), "
                      f".in_valid({previous_valid}), .in_data({previous_data}), .out_valid(v{index}), .out_data(d{index}));")
        previous_valid, previous_data = f"v{index}", f"d{index}"
    last = kernels[-1]
    return f"""module {TOP} #(parameter H = 6, parameter W = 6) (
    input clk, input rst,
    input in_valid, output in_ready, input [{input_channels - 1}:0] in_data,
    output out_valid, output [{last.out_channels * last.output_format.width - 1}:0] out_data
);
    localparam OUT_BITS = {last.output_format.width};
    assign in_ready = 1'b1;
{chr(10).join(wires)}
{chr(10).join(stages)}
    assign out_valid = {previous_valid};
    assign out_data = {previous_data};
endmodule
"""


TESTBENCH_MODULE = """// Streams the windows of inputs.hex (one pixel per line) through the top, a gap of GAP idle
// cycles after every window, and writes each output pixel to outputs.hex plus cycle counts.
module nqec_tb;
    parameter H = 6, W = 6, WINDOWS = 1, GAP = 0, IN_BITS = 1, OUT_BITS = 1;
    reg clk = 0, rst = 1, in_valid = 0;
    reg [IN_BITS-1:0] in_data = 0;
    reg [IN_BITS-1:0] inputs [0:H*W*WINDOWS-1];
    wire out_valid, in_ready;
    wire [OUT_BITS-1:0] out_data;
    integer outputs, timing, pixel, cycle = 0, seen = 0, idle;
    nqec_predecoder #(.H(H), .W(W)) dut (.clk(clk), .rst(rst), .in_valid(in_valid), .in_ready(in_ready),
        .in_data(in_data), .out_valid(out_valid), .out_data(out_data));
    always #1 clk = ~clk;
    always @(posedge clk) begin
        cycle <= cycle + 1;
        if (out_valid) begin
            $fdisplay(outputs, "%h", out_data);
            if (seen % (H * W) == H * W - 1) $fdisplay(timing, "window_out %0d", cycle);
            seen <= seen + 1;
        end
    end
    initial begin
        $readmemh("inputs.hex", inputs);
        outputs = $fopen("outputs.hex", "w");
        timing = $fopen("timing.txt", "w");
        repeat (3) @(posedge clk);
        rst <= 0;
        for (pixel = 0; pixel < H * W * WINDOWS; pixel = pixel + 1) begin
            @(posedge clk);
            in_valid <= 1; in_data <= inputs[pixel];
            if (pixel % (H * W) == H * W - 1) $fdisplay(timing, "window_in %0d", cycle);
            if (pixel % (H * W) == H * W - 1 && GAP > 0) begin
                @(posedge clk); in_valid <= 0;
                for (idle = 1; idle < GAP; idle = idle + 1) @(posedge clk);
            end
        end
        @(posedge clk); in_valid <= 0;
        while (seen < H * W * WINDOWS) @(posedge clk);
        $fclose(outputs); $fclose(timing);
        $finish;
    end
endmodule
"""


@dataclasses.dataclass
class RtlDesign:
    """The written RTL: its Verilog files, kernels and settings (``rtl.json`` beside them)."""

    path: Path
    kernels: list[Kernel]
    settings: dict

    @property
    def sources(self) -> list[Path]:
        return [self.path / name for name in self.settings["sources"]]

    @classmethod
    def load(cls, path: str | Path) -> "RtlDesign":
        path = Path(path)
        if not (path / "rtl.json").is_file():
            raise NqecError(f"no RTL design at {path} (expected rtl.json there): run nqec fpga rtl --out {path}")
        settings = json.loads((path / "rtl.json").read_text())
        kernels = [Kernel(**{**k, "input_format": Format(**k["input_format"]), "output_format": Format(**k["output_format"]),
                             "element_formats": [tuple(e) for e in k["element_formats"]]}) for k in settings["kernels"]]
        return cls(path, kernels, settings)


def write_rtl(layers: list[ConvLayer], input_channels: int, grid: tuple[int, int], out: str | Path,
              provenance: dict | None = None) -> RtlDesign:
    """Generate the whole pre-decoder's Verilog into ``out`` (kernels, line buffers, top, testbench)."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out / "kernels", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    kernels = build_kernels(layers, Format(False, 1, 0), out)
    sources = []
    for kernel_dir in sorted((out / "kernels").iterdir()):
        for source in sorted((kernel_dir / "src").glob("*.v")):
            if not source.name.endswith("_wrapper.v"):
                sources.append(str(source.relative_to(out)))
    static = sorted((out / "kernels" / "layer0" / "src" / "static").glob("*.v"))
    sources += [str(s.relative_to(out)) for s in static]
    (out / "nqec_layers.v").write_text("`timescale 1 ns / 1 ps\n" + "\n".join(_layer_module(k) for k in kernels))
    (out / "nqec_window3x3.v").write_text("`timescale 1 ns / 1 ps\n" + WINDOW_MODULE)
    (out / f"{TOP}.v").write_text("`timescale 1 ns / 1 ps\n" + _top_module(kernels, input_channels))
    (out / f"{TESTBENCH}.v").write_text("`timescale 1 ns / 1 ps\n" + TESTBENCH_MODULE)
    sources += ["nqec_layers.v", "nqec_window3x3.v", f"{TOP}.v"]
    height, width = grid
    settings = {
        **(provenance or {}), "top": TOP, "grid": [height, width], "input_channels": input_channels,
        "sources": sources, "testbench": f"{TESTBENCH}.v",
        "ii_pixels": 1, "cycles_per_window": height * width,
        "latency_cycles_model": sum(k.latency + (window_latency(width) if k.taps == 9 else 0) for k in kernels),
        "da4ml_cost": sum(k.cost for k in kernels),
        "kernels": [dataclasses.asdict(k) for k in kernels],
    }
    (out / "rtl.json").write_text(json.dumps(settings, indent=1) + "\n")
    return RtlDesign(out, kernels, settings)


def window_latency(width: int) -> int:
    """Cycles a 3x3 line buffer holds a pixel before its window is complete (W+2)."""
    return width + 2


def pack_pixels(windows: np.ndarray) -> np.ndarray:
    """Event windows ``[N, C, H, W]`` (0/1) -> one integer per pixel, row-major (channel c at bit c)."""
    bits = windows.astype(np.uint64).transpose(0, 2, 3, 1).reshape(-1, windows.shape[1])
    return (bits << np.arange(windows.shape[1], dtype=np.uint64)).sum(axis=1)


def unpack_logits(lines: list[str], fmt: Format, channels: int, shape: tuple[int, int, int]) -> np.ndarray:
    """``outputs.hex`` lines -> logits ``[N, D, H, W]`` (float64 values of the two's complement words)."""
    words = np.array([[int(line, 16) >> (c * fmt.width) & ((1 << fmt.width) - 1) for c in range(channels)]
                      for line in lines], dtype=np.int64)
    if fmt.signed:
        words = np.where(words >= 1 << (fmt.width - 1), words - (1 << fmt.width), words)
    n, height, width = shape
    return (words * 2.0 ** -fmt.fractional).reshape(n, height, width, channels).transpose(0, 3, 1, 2)
