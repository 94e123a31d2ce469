"""The ``nqec`` command line. Each subcommand imports its libraries lazily, so ``nqec serve``
never pulls in torch or the training code."""

from __future__ import annotations

import argparse
import sys

from decoder.errors import NqecError


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or a comma list of integers, got {text!r}") from None


def _float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or a comma list of numbers, got {text!r}") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _add_experiment_args(parser: argparse.ArgumentParser, sweep: bool) -> None:
    parser.add_argument("-d", "--distance", type=_int_list if sweep else int, default=[5] if sweep else 5,
                        help="code distance, odd >= 3" + (" (comma list for a sweep)" if sweep else ""))
    parser.add_argument("-r", "--rounds", type=int, default=None, help="syndrome rounds (default: the distance)")
    parser.add_argument("-p", type=_float_list if sweep else float, default=[0.003] if sweep else 0.003,
                        help="physical error rate in (0, 0.5)" + (" (comma list for a sweep)" if sweep else ""))
    parser.add_argument("--noise", choices=["depolarizing", "si1000"], default="depolarizing")
    parser.add_argument("--basis", choices=["z", "x"], default="z")


def _progress(total: int, description: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        transient=True)
    task = progress.add_task(description, total=total)
    return progress, lambda n: progress.advance(task, n)


def _emit(table, payload: object, json_path: str | None) -> None:
    """Print a result table and, if asked, write the result's JSON."""
    from training.report import print_table, write_json

    print_table(table)
    if json_path:
        write_json(json_path, payload)
        print(f"wrote {json_path}")


def _evaluate_and_report(jobs: list[tuple[list, str, str | None]], shots: int, seed: int, baseline: bool,
                         json_path: str | None, matching: str | None = None,
                         reference: str | None = None) -> list[dict]:
    """Evaluate each ``(specs, decoder, model)`` job on ``shots`` shots per spec; print one table."""
    from training.evaluate import evaluate_sweep
    from training.report import command_line, evaluation_table

    total = sum(len(specs) for specs, _, _ in jobs) * shots
    progress, advance = _progress(total, "decoding")
    results = []
    with progress:
        for specs, decoder, model in jobs:
            results += evaluate_sweep(specs, decoder, shots, seed, baseline=baseline, model=model, on_progress=advance,
                                      matching=matching, reference=reference)
    for record in results:
        record["command"] = command_line()
    _emit(evaluation_table(results), results[0] if len(results) == 1 else results, json_path)
    return results


def cmd_evaluate(args: argparse.Namespace) -> int:
    from decoder.spec import CodeSpec
    from training.evaluate import sweep_specs

    specs = sweep_specs(args.distance, args.p, args.rounds, args.basis, args.noise)
    results = _evaluate_and_report([(specs, args.decoder, args.model)], args.shots, args.seed, not args.no_baseline,
                                   args.json, args.matching, args.reference)
    if args.record:
        from decoder.bundle import resolve_model
        from training.export import metrics_key, record_metrics

        if args.model is None:
            raise NqecError("--record stores results in a model bundle: give --model")
        bundle_dir = resolve_model(args.model)
        for record in results:
            record_metrics(bundle_dir, metrics_key(args.model, args.decoder, CodeSpec.from_dict(record["spec"])), record)
        print(f"recorded {len(results)} result(s) in {bundle_dir / 'manifest.json'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job on shipped defaults: every shipped neural bundle in each of its pipelines at its
    own spec, next to both PyMatching modes."""
    from decoder.bundle import PIPELINES, Bundle, shipped_models
    from decoder.spec import CodeSpec

    bundles = [Bundle.load(name) for name in shipped_models()]
    jobs = [([bundle.spec], pipeline, bundle.name) for bundle in bundles for pipeline in PIPELINES[bundle.kind]]
    if not jobs:  # no trained models shipped: the matching pipeline end to end
        jobs = [([CodeSpec(5, 5, 0.003)], "matching", None)]
    _evaluate_and_report(jobs, args.shots, args.seed, True, args.json)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from training.plot import load_results, plot_ler

    plot_ler(load_results(args.results), args.out)
    print(f"wrote {args.out}")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from rich.table import Table

    from training.grid import grid_rows, markdown_table, pipeline_labels, row_cells
    from training.plot import load_results
    from training.report import command_line

    rows = grid_rows(load_results(args.results))
    if args.markdown:
        print(markdown_table(rows))
        return 0
    pipelines = pipeline_labels(rows)
    table = Table(title="logical errors on the same shots per point: plain and correlated PyMatching, and each "
                        "pipeline's errors (its LER ÷ plain, ÷ correlated)", show_edge=False, pad_edge=False)
    for column in ("d", "p", "shots", "plain", "corr.", *pipelines):
        table.add_column(column.replace(" (", "\n("), justify="right")  # model names on a line of their own
    for row in rows:
        table.add_row(*row_cells(row, pipelines))
    _emit(table, {"rows": rows, "sources": args.results, "command": command_line()}, args.json)
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from decoder.bundle import Bundle
    from training.evaluate import sweep_specs
    from training.quantize import quantize_bundle
    from training.report import command_line

    parent = Bundle.load(args.model)
    spec = sweep_specs([args.distance], [args.p], args.rounds, args.basis, args.noise)[0] if args.distance else None
    bundle = quantize_bundle(parent, args.out, args.shots, args.seed, spec, command_line())
    print(f"wrote bundle {bundle.path}: {parent.name} with 8-bit weights and activations, calibrated on "
          f"{args.shots:,} shots of {(spec or parent.spec).label()}")
    return 0


def cmd_bench_data(args: argparse.Namespace) -> int:
    from rich.table import Table

    from training.bench_data import bench_data
    from training.evaluate import sweep_specs
    from training.report import command_line

    (spec,) = sweep_specs([args.distance], [args.p], args.rounds, args.basis, args.noise)
    result = bench_data(spec, args.batch, args.batches, args.seed)
    result["command"] = command_line()
    table = Table(title=f"nqec bench data ({spec.label()}, batch {args.batch})")
    for column in ("stream", "nqec samples/s", "stim raw samples/s", "ratio"):
        table.add_column(column, justify="right")
    for name, row in result["streams"].items():
        table.add_row(name, f"{row['stream_samples_per_s']:,.0f}", f"{row['stim_samples_per_s']:,.0f}", f"{row['ratio']:.3f}")
    _emit(table, result, args.json)
    return 0


def cmd_bench_decode(args: argparse.Namespace) -> int:
    from rich.table import Table

    from training.bench_decode import bench_decode
    from training.evaluate import sweep_specs
    from training.report import command_line

    specs = sweep_specs(args.distance, args.p, args.rounds, args.basis, args.noise)
    result = bench_decode(args.decoder, args.model, specs, args.shots, args.seconds, args.seed)
    result["command"] = command_line()
    name = args.decoder + (f" ({args.model})" if args.model else "")
    table = Table(title=f"nqec bench decode: {name}, shots/s on {args.shots:,} shots per point ({result['machine']})")
    for column in ("d", "p", "pipeline", "matching", "correlated", "vs matching", "vs correlated"):
        table.add_column(column, justify="right")
    for row in result["rows"]:
        table.add_row(str(row["distance"]), f"{row['p']:g}", f"{row['shots_per_s']:,.0f}",
                      f"{row['matching_shots_per_s']:,.0f}", f"{row['correlated_shots_per_s']:,.0f}",
                      f"{row['vs_matching']:.3f}x", f"{row['vs_correlated']:.3f}x")
    _emit(table, result, args.json)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from training.export import export_bundle
    from training.report import command_line

    common = dict(distance=args.distance, rounds=args.rounds, ps=tuple(args.p), basis=args.basis, noise=args.noise,
                  steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed, val_every=args.val_every,
                  val_shots=args.val_shots, out=args.out, resume=args.resume, init_from=args.init_from,
                  workers=args.workers)
    if args.model_kind == "predecoder":
        from training.train_predecoder import PreDecoderConfig, train_predecoder

        config = PreDecoderConfig(**common, size=args.size, pos_weight=args.pos_weight, threshold=args.threshold)
        checkpoint = train_predecoder(config, command_line())
    else:
        from training.train_transformer import TransformerConfig, train_transformer

        config = TransformerConfig(**common, size=args.size, fallback_threshold=args.threshold,
                                   table_shots=args.table_shots, table_tempering=args.table_tempering)
        checkpoint = train_transformer(config, command_line())
    if checkpoint is not None:
        bundle = export_bundle(checkpoint, args.out)
        print(f"wrote bundle {bundle.path} ({bundle.manifest['parameters']:,} parameters)")
    return 0


def _reliability_table(name: str, reliability: dict):
    from rich.table import Table

    table = Table(title=f"edge probabilities of {name}: predicted vs observed on {reliability['shots']:,} DEM "
                        f"samples (expected calibration error {reliability['ece']:.2e})")
    for column in ("predicted in", "edges", "mean predicted", "observed frequency"):
        table.add_column(column, justify="right")
    for b in reliability["bins"]:
        table.add_row(f"[{b['low']:g}, {b['high']:g})", f"{b['count']:,}", f"{b['predicted']:.3g}", f"{b['observed']:.3g}")
    return table


def cmd_calibrate(args: argparse.Namespace) -> int:
    from rich.table import Table

    from decoder.bundle import Bundle
    from training.calibrate import calibrate_guided, reliability_curve
    from training.evaluate import sweep_specs
    from training.export import update_manifest
    from training.report import command_line

    bundle = Bundle.load(args.model)
    (spec,) = sweep_specs([args.distance], [args.p], args.rounds, args.basis, args.noise)
    reliability = reliability_curve(bundle, spec, min(args.shots, 20_000), args.seed + 1)
    _emit(_reliability_table(bundle.name, reliability), reliability, None)
    result = calibrate_guided(bundle, spec, args.shots, args.seed)
    result.update(reliability=reliability, command=command_line())
    table = Table(title=f"guided-matching calibration of {bundle.name} on {args.shots:,} held-out shots "
                        f"({spec.label()}); mix 0 = matching alone")
    for column in ("matching", "mix", "temperature", "logical errors"):
        table.add_column(column, justify="right")
    for row in result["table"]:
        table.add_row(row["matching"], f"{row['mix']:g}", f"{row['temperature']:g}", str(row["errors"]))
    _emit(table, result, args.json)
    best = {key: result[key] for key in ("matching", "mix", "temperature")}
    print(f"best: {best['matching']} matching, mix {best['mix']:g}, temperature {best['temperature']:g}")
    if args.write:
        update_manifest(bundle.path, lambda manifest: manifest["predecoder"].update(
            guided=best, guided_calibration=result))
        print(f"wrote the mix into {bundle.path / 'manifest.json'}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from training.export import export_bundle

    bundle = export_bundle(args.checkpoint, args.out, args.name)
    print(f"wrote bundle {bundle.path}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    import json

    from rich.table import Table

    from decoder.bundle import Bundle, shipped_models
    from decoder.spec import CodeSpec
    from training.report import print_table

    summaries = [Bundle.load(name).summary() for name in shipped_models()]
    if args.json:
        print(json.dumps(summaries, indent=2))
        return 0
    table = Table(title="shipped models")
    for column in ("name", "kind", "trained on", "parameters", "default pipeline: LER ÷ matching, ÷ correlated (shots)",
                   "trained where, how long"):
        table.add_column(column)
    for s in summaries:
        spec = CodeSpec.from_dict(s["spec"])
        own = f"evaluate {spec.label()}"
        evaluations = sorted(key for key in s["metrics"] if key.startswith("evaluate d="))
        key = own if own in s["metrics"] else (evaluations[0] if evaluations else None)
        measured = s["metrics"].get(key) if key else None
        ratio = "-" if measured is None else (
            f"{measured['ler_ratio']:.3f}, "
            f"{'-' if measured.get('correlated_ratio') is None else format(measured['correlated_ratio'], '.3f')} "
            f"({measured['shots']:,}{'' if key == own else ', ' + key.removeprefix('evaluate ')})")
        totals = s["training_totals"]
        table.add_row(s["name"], s["kind"], spec.label(), f"{s['parameters']:,}", ratio,
                      f"{' then '.join(dict.fromkeys(totals['machines']))}, {totals['wall_seconds'] / 60:.0f} min, "
                      f"{totals['samples']:,} samples")
    print_table(table)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    from server.app import serve_forever
    from server.config import ServerConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve_forever(ServerConfig(host=args.host, port=args.port, models_dir=args.models, max_batch=args.max_batch,
                               max_wait_us=args.max_wait_us, tls_cert=args.tls_cert, tls_key=args.tls_key,
                               token=args.token, metrics_port=args.metrics_port, workers=args.workers,
                               max_streams=args.max_streams, max_inflight_shots=args.max_inflight_shots))
    return 0


def served_model_name(model: str, spec) -> str:
    """``matching`` and ``matching-correlated`` mean the server's matching model of that mode for
    ``spec``; other names pass through."""
    from server.models import matching_model_name

    if model in ("matching", "matching-correlated"):
        return matching_model_name(spec, correlated=model == "matching-correlated")
    return model


def cmd_client_decode(args: argparse.Namespace) -> int:
    import grpc
    import numpy as np

    from decoder.bundle import Bundle
    from decoder.registry import build_decoder
    from server.client import DecoderClient
    from training.evaluate import sweep_specs

    (spec,) = sweep_specs([args.distance], [args.p], args.rounds, args.basis, args.noise)
    name = served_model_name(args.model, spec)
    client = DecoderClient([t for t in args.target.split(",") if t], token=args.token)
    try:
        info = client.model_info(name)
    except grpc.RpcError as exc:
        raise NqecError(f"server at {args.target}: {exc.code().name}: {exc.details()}") from None
    if info.num_detectors != spec.circuit().num_detectors:
        raise NqecError(f"model {name!r} decodes d={info.distance} r={info.rounds}; -d/-r give a different experiment")
    events, observables = spec.circuit().compile_detector_sampler(seed=args.seed).sample(
        args.shots, separate_observables=True, bit_packed=True)
    try:
        flips, stages, server_seconds = client.decode(name, events)
    except grpc.RpcError as exc:
        raise NqecError(f"server at {args.target}: {exc.code().name}: {exc.details()}") from None
    local = (build_decoder(info.decoder, spec) if info.kind == "matching" else Bundle.load(name).decoder(spec))
    agree = np.array_equal(flips, local.decode_batch(events))
    actual = np.unpackbits(observables, axis=1, count=info.num_observables, bitorder="little").astype(bool)
    errors = int(np.any(flips != actual, axis=1).sum())
    print(f"{args.shots} shots via {args.target} model {name}: {errors} logical errors (LER {errors / args.shots:.3e}), "
          f"server decode {server_seconds * 1e3:.2f} ms, network answered {np.mean(stages == 1):.1%}, "
          f"agrees with in-process decoding: {'yes' if agree else 'NO'}")
    return 0 if agree else 1


def cmd_bench_server(args: argparse.Namespace) -> int:
    from server.bench import bench_server
    from training.evaluate import sweep_specs
    from training.report import command_line

    (spec,) = sweep_specs([args.distance], [args.p], args.rounds, args.basis, args.noise)
    result, table = bench_server(served_model_name(args.model, spec), spec, target=args.target, seconds=args.seconds,
                                 clients=args.clients, seed=args.seed)
    result["command"] = command_line()
    _emit(table, result, args.json)
    return 0


def cmd_bench_stream(args: argparse.Namespace) -> int:
    from server.bench_stream import bench_stream
    from training.report import command_line

    result, table = bench_stream(tuple(args.distance), args.p, args.seed, args.ler_shots, args.distance[0])
    result["command"] = command_line()
    _emit(table, result, args.json)
    return 0


def cmd_bench_soak(args: argparse.Namespace) -> int:
    from server.soak import soak
    from training.report import command_line

    result, table = soak(args.seconds, args.clients, args.seed)
    result["command"] = command_line()
    _emit(table, result, args.json)
    return 0 if result["wrong_answers"] == 0 and result["dead_models"] == 0 else 1


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
    from training.report import command_line, write_json

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
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
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

    from rich.table import Table


    import hls4ml

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
    _emit(table, summary, args.json)
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
    from training.report import command_line, write_json

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
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
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
    _emit(table, result, args.json)
    return 0


def cmd_bench_inference(args: argparse.Namespace) -> int:
    from rich.table import Table

    from training.bench_inference import BATCHES, bench_inference
    from training.report import command_line

    result = bench_inference(args.model, args.seconds, args.parity_shots, args.seed)
    result["command"] = command_line()
    table = Table(title=f"nqec bench inference: {result['model']} ({result['machine']})")
    for column in ("runtime", *[f"batch {b} shots/s" for b in BATCHES], "batch 1 p50 ms", "batch 1 p99 ms"):
        table.add_column(column, justify="right")
    for runtime, row in result["runtimes"].items():
        table.add_row(runtime, *[f"{row[f'batch{b}_shots_per_s']:,.0f}" for b in BATCHES],
                      f"{row['batch1_p50_ms']:.3f}", f"{row['batch1_p99_ms']:.3f}")
    ratio = result["onnx_vs_torch"]
    table.add_row("onnxruntime / torch", *[f"{ratio[f'batch{b}_shots_per_s']:.2f}x" for b in BATCHES],
                  f"{ratio['batch1_p50_ms']:.2f}x", f"{ratio['batch1_p99_ms']:.2f}x")
    parity = result["parity"]
    table.caption = (f"parity on {parity['shots']} shots: max |onnx - torch| = {parity['max_abs_diff']:.2e}, "
                     f"identical decisions: {parity['identical_decisions']}")
    _emit(table, result, args.json)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nqec", description="Neural decoders for surface-code QEC.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    evaluate = commands.add_parser("evaluate", help="logical error rate of a decoder vs matching on Stim shots")
    evaluate.add_argument("--decoder", default="matching", help="decoder name (default: matching)")
    evaluate.add_argument("--model", default=None, help="a shipped model name or a bundle path (neural decoders)")
    _add_experiment_args(evaluate, sweep=True)
    evaluate.add_argument("--shots", type=_positive_int, default=100_000)
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--matching", choices=["uncorrelated", "correlated"], default=None,
                          help="matching mode: of --decoder matching (default uncorrelated), or of a neural "
                               "pipeline's residual/fallback stage (default: the bundle's)")
    evaluate.add_argument("--no-baseline", action="store_true",
                          help="skip decoding the same shots with both PyMatching modes")
    evaluate.add_argument("--reference", choices=["tesseract"], default=None,
                          help="also decode the same shots with a near-optimal reference (extra 'reference')")
    evaluate.add_argument("--json", default=None, help="write the results to this JSON file")
    evaluate.add_argument("--record", action="store_true", help="also store the results in the model bundle's manifest")
    evaluate.set_defaults(func=cmd_evaluate)

    demo = commands.add_parser("demo", help="decode Stim shots with the shipped decoders and print the table")
    demo.add_argument("--shots", type=_positive_int, default=50_000)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--json", default=None)
    demo.set_defaults(func=cmd_demo)

    plot = commands.add_parser("plot", help="plot LER vs p per distance from evaluate JSON files")
    plot.add_argument("results", nargs="+", help="JSON files from `nqec evaluate --json`")
    plot.add_argument("--out", default="ler.png", help="output PNG (default: ler.png)")
    plot.set_defaults(func=cmd_plot)

    table = commands.add_parser("table", help="one LER table over a d x p grid from evaluate JSON files")
    table.add_argument("results", nargs="+", help="JSON files from `nqec evaluate --json` (same seed per point)")
    table.add_argument("--markdown", action="store_true", help="print a Markdown table (for the README)")
    table.add_argument("--json", default=None, help="write the combined rows to this JSON file")
    table.set_defaults(func=cmd_table)
    train = commands.add_parser("train", help="train a neural decoder and write its bundle")
    kinds = train.add_subparsers(dest="model_kind", required=True, metavar="MODEL")
    for kind, defaults in {"predecoder": dict(d=5, p=[0.003], size="fpga", steps=3000, batch=256, lr=2e-3),
                           "transformer": dict(d=3, p=[0.001, 0.003, 0.005], size="small", steps=3000, batch=256,
                                               lr=1e-3)}.items():
        sub = kinds.add_parser(kind, help=f"train the {kind}")
        sub.add_argument("-d", "--distance", type=int, default=defaults["d"])
        sub.add_argument("-r", "--rounds", type=int, default=None, help="rounds (default: the distance)")
        sub.add_argument("-p", type=_float_list, default=defaults["p"], help="p, or a comma list to train on a mixture")
        sub.add_argument("--noise", choices=["depolarizing", "si1000"], default="depolarizing")
        sub.add_argument("--basis", choices=["z", "x"], default="z")
        sub.add_argument("--size", default=defaults["size"],
                         choices=["fpga", "accurate"] if kind == "predecoder" else ["small", "base"])
        sub.add_argument("--steps", type=_positive_int, default=defaults["steps"])
        sub.add_argument("--batch", type=_positive_int, default=defaults["batch"])
        sub.add_argument("--lr", type=float, default=defaults["lr"])
        sub.add_argument("--seed", type=int, default=0)
        sub.add_argument("--val-every", type=_positive_int, default=500)
        sub.add_argument("--val-shots", type=_positive_int, default=20_000)
        sub.add_argument("--out", default=f"runs/{kind}", help="run directory: checkpoint, metrics, bundle")
        sub.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
        sub.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                         help="start from this checkpoint's weights with a fresh schedule (fine-tuning); "
                              "its provenance is kept in the new one")
        sub.add_argument("--workers", type=int, default=0,
                         help="DataLoader processes drawing Stim samples (default 0: in the training process)")
        if kind == "predecoder":
            sub.add_argument("--pos-weight", type=float, default=1.0, help="BCE weight of positive edges")
            sub.add_argument("--threshold", type=float, default=None,
                             help="edge probability above which an edge is applied (default: calibrated on validation shots)")
        else:
            sub.add_argument("--threshold", type=float, default=None,
                             help="fall back to matching when |p - 0.5| is below this (default: calibrated)")
            sub.add_argument("--table-shots", type=int, default=0,
                             help="count this many samples once and train on each distinct syndrome's flip rate "
                                  "(small codes such as d=3; default 0: stream fresh samples)")
            sub.add_argument("--table-tempering", type=float, default=0.5,
                             help="draw table syndromes with probability count**T (loss-weighted back to the data)")
        sub.set_defaults(func=cmd_train)

    calibrate = commands.add_parser("calibrate", help="calibrate guided matching's mix of network and prior")
    calibrate.add_argument("--model", default="predecoder-d5", help="a pre-decoder bundle (name or path)")
    _add_experiment_args(calibrate, sweep=False)
    calibrate.add_argument("--shots", type=_positive_int, default=40_000, help="held-out shots")
    calibrate.add_argument("--seed", type=int, default=424242)
    calibrate.add_argument("--write", action="store_true", help="store the best mix in the bundle's manifest")
    calibrate.add_argument("--json", default=None)
    calibrate.set_defaults(func=cmd_calibrate)

    quantize = commands.add_parser("quantize", help="an 8-bit copy of a bundle (onnxruntime static quantization)",
                                   description="Write an 8-bit copy of a bundle, its activation ranges calibrated "
                                               "on Stim shots: at -d/-p/... if given, else at the bundle's own spec.")
    quantize.add_argument("--model", required=True, help="a shipped model name or a bundle path")
    quantize.add_argument("--out", required=True, help="folder of the new bundle (its name is the folder's)")
    quantize.add_argument("--shots", type=_positive_int, default=2000, help="Stim shots that calibrate the ranges")
    quantize.add_argument("--seed", type=int, default=0)
    _add_experiment_args(quantize, sweep=False)  # the calibration spec; without -d, the bundle's own
    quantize.set_defaults(func=cmd_quantize, distance=None)
    export = commands.add_parser("export", help="turn a training checkpoint into a model bundle")
    export.add_argument("checkpoint")
    export.add_argument("--out", required=True)
    export.add_argument("--name", default=None, help="bundle name (default: the output folder's name)")
    export.set_defaults(func=cmd_export)

    models = commands.add_parser("models", help="list the shipped model bundles")
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=cmd_models)

    serve = commands.add_parser("serve", help="run the gRPC decoding service")
    from server.config import ServerConfig

    defaults = ServerConfig()
    serve.add_argument("--models", default=None, help="a folder of bundles to serve besides the shipped ones")
    serve.add_argument("--host", default=defaults.host)
    serve.add_argument("--port", type=int, default=defaults.port)
    serve.add_argument("--max-batch", type=_positive_int, default=defaults.max_batch,
                       help="most shots decoded in one batch")
    serve.add_argument("--max-wait-us", type=int, default=defaults.max_wait_us,
                       help="how long a batch waits for more requests")
    serve.add_argument("--max-inflight-shots", type=_positive_int, default=defaults.max_inflight_shots,
                       help="shots queued or decoding at once; past it requests get RESOURCE_EXHAUSTED")
    serve.add_argument("--workers", type=_positive_int, default=defaults.workers,
                       help="threads serving calls (each open DecodeStream holds one)")
    serve.add_argument("--max-streams", type=int, default=defaults.max_streams,
                       help="open DecodeStreams; more get RESOURCE_EXHAUSTED (must be below --workers)")
    serve.add_argument("--tls-cert", default=None)
    serve.add_argument("--tls-key", default=None)
    serve.add_argument("--token", default=None, help="require 'authorization: Bearer TOKEN' metadata")
    serve.add_argument("--metrics-port", type=int, default=None,
                       help="serve Prometheus /metrics on this port (default: no metrics listener)")
    serve.set_defaults(func=cmd_serve)

    client = commands.add_parser("client", help="talk to a running decoding service")
    client_commands = client.add_subparsers(dest="client_command", required=True, metavar="ACTION")
    decode = client_commands.add_parser("decode", help="sample with Stim, decode remotely, check in-process")
    decode.add_argument("--target", default="127.0.0.1:50051", help="host:port, or a comma list of replicas")
    decode.add_argument("--model", default="matching", help="served model name ('matching' = matching for -d/-r/-p)")
    _add_experiment_args(decode, sweep=False)
    decode.add_argument("--shots", type=_positive_int, default=10_000)
    decode.add_argument("--seed", type=int, default=0)
    decode.add_argument("--token", default=None)
    decode.set_defaults(func=cmd_client_decode)

    fpga = commands.add_parser("fpga", help="hls4ml firmware for the pre-decoder")
    fpga_commands = fpga.add_subparsers(dest="fpga_command", required=True, metavar="ACTION")
    fpga_export = fpga_commands.add_parser("export", help="write the hls4ml project, test vectors and cost estimate")
    fpga_export.add_argument("--model", default="predecoder-fpga")
    fpga_export.add_argument("--out", default="out/fpga/predecoder-fpga")
    fpga_export.add_argument("--part", default="xcvu13p-flga2577-2-e")
    fpga_export.add_argument("--clock-ns", type=float, default=4.0)
    fpga_export.add_argument("--precision", default="auto", help="auto (profiled on Stim data) or ap_fixed<W,I>")
    fpga_export.add_argument("--reuse-factor", type=_positive_int, default=1)
    fpga_export.add_argument("--vectors", type=_positive_int, default=200, help="test vectors for the testbench")
    fpga_export.add_argument("--seed", type=int, default=0)
    fpga_export.set_defaults(func=cmd_fpga_export)
    fpga_csim = fpga_commands.add_parser("csim", help="bit-accurate C simulation vs the float model")
    fpga_csim.add_argument("--model", default="predecoder-fpga")
    fpga_csim.add_argument("--shots", type=_positive_int, default=100_000, help="shots for the paired LER comparison")
    fpga_csim.add_argument("--csim-windows", type=_positive_int, default=10_000)
    fpga_csim.add_argument("--precision", default="auto")
    fpga_csim.add_argument("--out", default=None, help="keep the compiled project here")
    fpga_csim.add_argument("--seed", type=int, default=1)
    fpga_csim.add_argument("--json", default=None)
    fpga_csim.set_defaults(func=cmd_fpga_csim)
    fpga_build = fpga_commands.add_parser("build", help="vendor step via the generated Tcl (needs vitis_hls/vivado)")
    fpga_build.add_argument("step", choices=["csim", "synth", "cosim", "bitstream"])
    fpga_build.add_argument("--project", default="out/fpga/predecoder-fpga")
    fpga_build.set_defaults(func=cmd_fpga_build)
    fpga_report = fpga_commands.add_parser("report", help="latency and resources from vendor reports")
    fpga_report.add_argument("project", nargs="?", default="out/fpga/predecoder-fpga")
    fpga_report.add_argument("--json", default=None)
    fpga_report.set_defaults(func=cmd_fpga_report)

    fpga_rtl = fpga_commands.add_parser("rtl", help="open Verilog of the whole pre-decoder (da4ml kernels, streaming top)")
    fpga_rtl.add_argument("--model", default="predecoder-fpga")
    fpga_rtl.add_argument("-d", "--distance", type=_positive_int, default=13, help="grid of this code distance")
    fpga_rtl.add_argument("--precision", default="auto")
    fpga_rtl.add_argument("--out", default="out/fpga/rtl")
    fpga_rtl.set_defaults(func=cmd_fpga_rtl)
    fpga_rtlsim = fpga_commands.add_parser("rtlsim", help="simulate the RTL on Stim windows vs the fixed-point emulation")
    fpga_rtlsim.add_argument("--model", default="predecoder-fpga")
    fpga_rtlsim.add_argument("-d", "--distance", type=_positive_int, default=5)
    fpga_rtlsim.add_argument("--windows", type=_positive_int, default=10_000, help="round windows to simulate")
    fpga_rtlsim.add_argument("--simulator", choices=["verilator", "icarus"], default="verilator")
    fpga_rtlsim.add_argument("--gap", type=int, default=0, help="idle cycles between windows")
    fpga_rtlsim.add_argument("--precision", default="auto")
    fpga_rtlsim.add_argument("--out", default=None, help="keep the RTL here")
    fpga_rtlsim.add_argument("--work", default=None, help="keep the simulation build here")
    fpga_rtlsim.add_argument("--seed", type=int, default=1)
    fpga_rtlsim.add_argument("--json", default=None)
    fpga_rtlsim.set_defaults(func=cmd_fpga_rtlsim)
    fpga_synth = fpga_commands.add_parser("synth-open", help="yosys resource estimate of the RTL (no place-and-route)")
    fpga_synth.add_argument("--rtl", default="out/fpga/rtl", help="a directory written by nqec fpga rtl")
    fpga_synth.add_argument("--family", default="xcup", help="yosys synth_xilinx family (xcup: UltraScale+)")
    fpga_synth.add_argument("--work", default=None)
    fpga_synth.add_argument("--json", default=None)
    fpga_synth.set_defaults(func=cmd_fpga_synth_open)

    bench = commands.add_parser("bench", help="benchmarks")
    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    data = benches.add_parser("data", help="training-stream samples/s vs Stim's raw sampler")
    _add_experiment_args(data, sweep=False)
    data.add_argument("--batch", type=_positive_int, default=1024)
    data.add_argument("--batches", type=_positive_int, default=200)
    data.add_argument("--seed", type=int, default=0)
    data.add_argument("--json", default=None)
    data.set_defaults(func=cmd_bench_data)
    inference = benches.add_parser("inference", help="onnxruntime vs torch shots/s and latency for a bundle")
    inference.add_argument("--model", default="predecoder-fpga")
    inference.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    inference.add_argument("--parity-shots", type=_positive_int, default=100_000)
    inference.add_argument("--seed", type=int, default=0)
    inference.add_argument("--json", default=None)
    inference.set_defaults(func=cmd_bench_inference)
    decode_bench = benches.add_parser("decode", help="a pipeline's shots/s next to both PyMatching modes")
    decode_bench.add_argument("--decoder", default="guided-matching", help="decoder name (default: guided-matching)")
    decode_bench.add_argument("--model", default="predecoder-fpga", help="a shipped model name or a bundle path")
    _add_experiment_args(decode_bench, sweep=True)
    decode_bench.add_argument("--shots", type=_positive_int, default=20_000, help="shots decoded per measurement")
    decode_bench.add_argument("--seconds", type=float, default=3.0, help="least time per measurement")
    decode_bench.add_argument("--seed", type=int, default=0)
    decode_bench.add_argument("--json", default=None)
    decode_bench.set_defaults(func=cmd_bench_decode)
    server_bench = benches.add_parser("server", help="gRPC latency and throughput vs in-process decoding")
    server_bench.add_argument("--model", default="matching")
    _add_experiment_args(server_bench, sweep=False)
    server_bench.add_argument("--target", default=None, help="a running server (default: start one on loopback)")
    server_bench.add_argument("--seconds", type=float, default=3.0, help="duration of each load phase")
    server_bench.add_argument("--clients", type=_positive_int, default=4, help="concurrent client threads")
    server_bench.add_argument("--seed", type=int, default=0)
    server_bench.add_argument("--json", default=None)
    server_bench.set_defaults(func=cmd_bench_server)
    stream_bench = benches.add_parser("stream", help="windowed decoding of 10 to 10,000-round experiments")
    stream_bench.add_argument("-d", "--distance", type=_int_list, default=[5, 7, 9],
                              help="distances (the first one gets the headline figures and the LER check)")
    stream_bench.add_argument("-p", type=float, default=0.003)
    stream_bench.add_argument("--ler-shots", type=_positive_int, default=20_000,
                              help="shots of the windowed vs whole-experiment LER check (r=100)")
    stream_bench.add_argument("--seed", type=int, default=0)
    stream_bench.add_argument("--json", default=None)
    stream_bench.set_defaults(func=cmd_bench_stream)
    soak_bench = benches.add_parser("soak", help="mixed traffic from several client processes; checks every answer")
    soak_bench.add_argument("--seconds", type=float, default=60.0, help="how long the load runs")
    soak_bench.add_argument("--clients", type=_positive_int, default=4, help="client processes")
    soak_bench.add_argument("--seed", type=int, default=0)
    soak_bench.add_argument("--json", default=None)
    soak_bench.set_defaults(func=cmd_bench_soak)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user mistakes print one line and return a non-zero exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except NqecError as exc:
        print(f"nqec {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nqec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
