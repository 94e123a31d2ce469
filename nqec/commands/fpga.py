"""``nqec fpga``: hls4ml firmware of the pre-decoder, its C simulation, open RTL and vendor steps."""

from __future__ import annotations

import argparse
import sys

from decoder.errors import NqecError
from nqec.commands.common import emit, positive_int, write_result


def _print_estimate(estimate: dict) -> None:
    from rich.table import Table

    from training.report import print_table

    table = Table(title=f"FPGA cost ESTIMATE (reuse factor {estimate['reuse_factor']}, {estimate['clock_ns']} ns clock)",
                  caption=estimate["label"])
    for column in ("layer", "multiplications", "parameters", "weight", "accum", "result", "cycles"):
        table.add_column(column, justify="right")
    for row in estimate["layers"]:
        table.add_row(row["layer"], f"{row['multiplications']:,}", f"{row['parameters']:,}", row["weight"],
                      row["accum"], row["result"], str(row["cycles"]))
    table.add_row("total", f"{estimate['multiplications_per_window']:,}", f"{estimate['parameters']:,}", "", "", "",
                  f"{estimate['latency_cycles']} ({estimate['latency_ns']:.0f} ns)")
    print_table(table)


def cmd_fpga_export(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from fpga.convert import convert, stim_windows
    from fpga.estimate import estimate
    from fpga.vectors import write_vectors

    design = convert(args.model, args.out, args.part, args.clock_ns, args.precision, args.reuse_factor,
                     compile_csim=False)
    windows = stim_windows(design.bundle, args.vectors, seed=args.seed)[: args.vectors]
    write_vectors(args.out, windows, design.emulate(windows))
    cost = estimate(design.layers, tuple(design.settings["input_shape"]), args.reuse_factor, args.clock_ns)
    settings_path = Path(args.out) / "nqec_fpga.json"
    settings_path.write_text(json.dumps({**design.settings, "estimate": cost, "test_vectors": len(windows)}, indent=1))
    _print_estimate(cost)
    print(f"wrote hls4ml project {args.out} ({len(windows)} test vectors in tb_data/)")
    return 0


def cmd_fpga_csim(args: argparse.Namespace) -> int:
    import tempfile

    from fpga.convert import convert
    from fpga.csim import csim_report
    from training.report import command_line

    with tempfile.TemporaryDirectory() as scratch:
        design = convert(args.model, args.out or scratch, precision=args.precision)
        result = csim_report(design, args.shots, args.csim_windows, args.seed)
    result["command"] = command_line()
    print(f"C simulation of {result['model']} on {result['csim_windows']} Stim windows "
          f"({result['csim_seconds']:.1f} s): edge decisions agree with float {result['edge_agreement']:.5%}; "
          f"numpy emulation bit-exact on {result['emulation_bitexact_windows']}/{result['csim_windows']} windows; "
          f"max |logit diff| {result['max_abs_logit_diff']:.4g}")
    ratio = result["ler_ratio_fixed_vs_float"]
    print(f"pipeline on {result['shots']} shots: LER fixed {result['ler_fixed']:.3e} vs float {result['ler_float']:.3e} "
          f"(ratio {'-' if ratio is None else f'{ratio:.3f}'}), {result['shots_with_different_outcome']} shots differ")
    write_result(result, args.json)
    if not result["emulation_bitexact"]:
        differ = result["csim_windows"] - result["emulation_bitexact_windows"]
        print(f"nqec fpga csim: MISMATCH: the numpy emulation differs from the C simulation on {differ} of "
              f"{result['csim_windows']} windows, so the fixed-point LER above is not the firmware's", file=sys.stderr)
        return 1
    return 0


def cmd_fpga_build(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from fpga.fixed import FixedType
    from fpga.vectors import check_results
    from fpga.vendor import run_step

    run_step(args.project, args.step)
    if args.step in ("csim", "cosim"):
        settings = json.loads((Path(args.project) / "nqec_fpga.json").read_text())
        result = check_results(args.project, args.step, FixedType.parse(settings["layers"][-1]["result"]))
        print(f"{args.step}: {result['matching_vectors']}/{result['vectors']} test vectors match the expected outputs")
        return 0 if result["passed"] else 1
    return 0


def cmd_fpga_report(args: argparse.Namespace) -> int:
    import contextlib
    import io

    import hls4ml
    from rich.table import Table

    with contextlib.redirect_stdout(io.StringIO()) as chatter:
        report = hls4ml.report.parse_vivado_report(str(args.project)) or {}
    synthesis = report.get("CSynthesisReport")
    if not synthesis:
        raise NqecError(f"no Vitis HLS synthesis report under {args.project} ({chatter.getvalue().strip() or 'run make fpga-synth'})")
    keys = ["TargetClockPeriod", "EstimatedClockPeriod", "BestLatency", "WorstLatency", "IntervalMin", "IntervalMax",
            "LUT", "FF", "DSP", "BRAM_18K", "URAM"]
    summary = {key: synthesis.get(key) for key in keys if key in synthesis}
    summary.update({f"Available{k}": synthesis.get(f"Available{k}") for k in ("LUT", "FF", "DSP", "BRAM_18K")
                    if f"Available{k}" in synthesis})
    table = Table(title=f"Vitis HLS report: {args.project}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(key, str(value))
    emit(table, summary, args.json)
    return 0


def _rtl_design(model: str, distance: int, out: str, precision: str):
    """Write the RTL of ``model`` for a ``distance`` grid into ``out`` (the layers profiled at its own spec)."""
    from decoder.bundle import Bundle
    from fpga.convert import fixed_point_layers, stim_windows
    from fpga.rtl import write_rtl

    bundle = Bundle.load(model)
    if bundle.kind != "predecoder":
        raise NqecError(f"the FPGA flow takes a predecoder bundle; {bundle.name!r} is a {bundle.kind}")
    layers = fixed_point_layers(bundle, precision)
    windows = stim_windows(bundle, 1, 0, distance)
    return write_rtl(layers, windows.shape[1], windows.shape[2:], out,
                     {"model": bundle.name, "distance": distance, "precision": precision}), bundle, layers


def cmd_fpga_rtl(args: argparse.Namespace) -> int:
    design, _, _ = _rtl_design(args.model, args.distance, args.out, args.precision)
    s = design.settings
    print(f"wrote RTL of {s['model']} for d={args.distance} ({s['grid'][0]}x{s['grid'][1]} pixels) to {args.out}: "
          f"top {s['top']}, {len(design.kernels)} da4ml kernels (adder cost {s['da4ml_cost']:,.0f}), "
          f"{s['cycles_per_window']} cycles per round window, latency ~{s['latency_cycles_model']} cycles")
    return 0


def cmd_fpga_rtlsim(args: argparse.Namespace) -> int:
    import tempfile

    import numpy as np

    from fpga.convert import INPUT_TYPE, stim_windows
    from fpga.fixed import emulate
    from fpga.rtlsim import simulate
    from training.report import command_line

    with tempfile.TemporaryDirectory() as scratch:
        design, bundle, layers = _rtl_design(args.model, args.distance, args.out or f"{scratch}/rtl", args.precision)
        rounds = args.distance
        windows = stim_windows(bundle, -(-args.windows // rounds), args.seed, args.distance)[: args.windows]
        logits, cycles = simulate(design, windows, args.work or f"{scratch}/sim", args.simulator, args.gap)
    expected = emulate(layers, INPUT_TYPE, windows)
    mismatched = ~np.all((logits == expected).reshape(len(windows), -1), axis=1)
    result = {"model": bundle.name, "distance": args.distance, "grid": design.settings["grid"],
              "simulator": args.simulator, "windows": len(windows), "mismatches": int(mismatched.sum()),
              "mismatched_logits": int((logits != expected).sum()), "gap_cycles": args.gap, **cycles,
              "cycles_per_window_without_gap": cycles["cycles_per_window"] - args.gap, "seed": args.seed,
              "command": command_line()}
    print(f"{args.simulator} simulation of {bundle.name} at d={args.distance}: {result['mismatches']} of "
          f"{len(windows):,} Stim windows differ from the fixed-point emulation; "
          f"{result['cycles_per_window_without_gap']:.0f} cycles per round window, "
          f"latency {cycles['latency_cycles']} cycles (last pixel in -> last logit out)")
    write_result(result, args.json)
    return 0 if result["mismatches"] == 0 else 1


def cmd_fpga_synth_open(args: argparse.Namespace) -> int:
    from rich.table import Table

    from fpga.rtl import RtlDesign
    from fpga.synth_open import synthesize
    from training.report import command_line

    design = RtlDesign.load(args.rtl)
    result = {**synthesize(design, args.work or f"{args.rtl}/yosys", family=args.family),
              "model": design.settings.get("model"), "distance": design.settings.get("distance"),
              "command": command_line()}
    table = Table(title=f"{design.settings.get('model')} at d={design.settings.get('distance')}: {result['label']}")
    for column in ("resource", "count", "of a VU13P"):
        table.add_column(column, justify="right")
    for key in ("LUT", "SRL", "FF", "CARRY", "DSP", "BRAM"):
        share = result["fraction_of_vu13p"].get(key)
        table.add_row(key, f"{result[key]:,}", "-" if share is None else f"{share:.1%}")
    emit(table, result, args.json)
    return 0


def register(commands) -> None:
    fpga = commands.add_parser("fpga", help="hls4ml firmware for the pre-decoder")
    actions = fpga.add_subparsers(dest="fpga_command", required=True, metavar="ACTION")
    export = actions.add_parser("export", help="write the hls4ml project, test vectors and cost estimate")
    export.add_argument("--model", default="predecoder-fpga")
    export.add_argument("--out", default="out/fpga/predecoder-fpga")
    export.add_argument("--part", default="xcvu13p-flga2577-2-e")
    export.add_argument("--clock-ns", type=float, default=4.0)
    export.add_argument("--precision", default="auto", help="auto (profiled on Stim data) or ap_fixed<W,I>")
    export.add_argument("--reuse-factor", type=positive_int, default=1)
    export.add_argument("--vectors", type=positive_int, default=200, help="test vectors for the testbench")
    export.add_argument("--seed", type=int, default=0)
    export.set_defaults(func=cmd_fpga_export)

    csim = actions.add_parser("csim", help="bit-accurate C simulation vs the float model")
    csim.add_argument("--model", default="predecoder-fpga")
    csim.add_argument("--shots", type=positive_int, default=100_000, help="shots for the paired LER comparison")
    csim.add_argument("--csim-windows", type=positive_int, default=10_000)
    csim.add_argument("--precision", default="auto")
    csim.add_argument("--out", default=None, help="keep the compiled project here")
    csim.add_argument("--seed", type=int, default=1)
    csim.add_argument("--json", default=None)
    csim.set_defaults(func=cmd_fpga_csim)

    build = actions.add_parser("build", help="vendor step via the generated Tcl (needs vitis_hls/vivado)")
    build.add_argument("step", choices=["csim", "synth", "cosim", "bitstream"])
    build.add_argument("--project", default="out/fpga/predecoder-fpga")
    build.set_defaults(func=cmd_fpga_build)

    report = actions.add_parser("report", help="latency and resources from vendor reports")
    report.add_argument("project", nargs="?", default="out/fpga/predecoder-fpga")
    report.add_argument("--json", default=None)
    report.set_defaults(func=cmd_fpga_report)

    rtl = actions.add_parser("rtl", help="open Verilog of the whole pre-decoder (da4ml kernels, streaming top)")
    rtl.add_argument("--model", default="predecoder-fpga")
    rtl.add_argument("-d", "--distance", type=positive_int, default=13, help="grid of this code distance")
    rtl.add_argument("--precision", default="auto")
    rtl.add_argument("--out", default="out/fpga/rtl")
    rtl.set_defaults(func=cmd_fpga_rtl)

    rtlsim = actions.add_parser("rtlsim", help="simulate the RTL on Stim windows vs the fixed-point emulation")
    rtlsim.add_argument("--model", default="predecoder-fpga")
    rtlsim.add_argument("-d", "--distance", type=positive_int, default=5)
    rtlsim.add_argument("--windows", type=positive_int, default=10_000, help="round windows to simulate")
    rtlsim.add_argument("--simulator", choices=["verilator", "icarus"], default="verilator")
    rtlsim.add_argument("--gap", type=int, default=0, help="idle cycles between windows")
    rtlsim.add_argument("--precision", default="auto")
    rtlsim.add_argument("--out", default=None, help="keep the RTL here")
    rtlsim.add_argument("--work", default=None, help="keep the simulation build here")
    rtlsim.add_argument("--seed", type=int, default=1)
    rtlsim.add_argument("--json", default=None)
    rtlsim.set_defaults(func=cmd_fpga_rtlsim)

    synth = actions.add_parser("synth-open", help="yosys resource estimate of the RTL (no place-and-route)")
    synth.add_argument("--rtl", default="out/fpga/rtl", help="a directory written by nqec fpga rtl")
    synth.add_argument("--family", default="xcup", help="yosys synth_xilinx family (xcup: UltraScale+)")
    synth.add_argument("--work", default=None)
    synth.add_argument("--json", default=None)
    synth.set_defaults(func=cmd_fpga_synth_open)
