"""``nqec decode``: decode a shot file of your own circuit (or DEM) and write the observable flips."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from decoder.errors import NqecError
from nqec.commands.common import emit, progress


def file_format(given: str | None, path: str, flag: str) -> str:
    """``given``, else the file's extension when it names a Stim format (``dets.b8`` -> ``b8``)."""
    from decoder.shot_files import FORMATS, check_format

    if given is not None:
        return check_format(given)
    suffix = Path(path).suffix.lstrip(".")
    if suffix not in FORMATS:
        raise NqecError(f"give {flag}: the extension of {path} names none of the formats {', '.join(FORMATS)}")
    return suffix


def cmd_decode(args: argparse.Namespace) -> int:
    from rich.table import Table

    from decoder.experiment import CircuitSpec, DemSpec
    from decoder.shot_files import count_shots
    from training.evaluate import decode_shot_file
    from training.report import command_line

    in_format = file_format(args.in_format, args.input, "--in-format")
    out_format = file_format(args.out_format, args.out, "--out-format")
    obs_format = file_format(args.obs_in_format, args.obs_in, "--obs-in-format") if args.obs_in else "b8"
    experiment = CircuitSpec.from_file(args.circuit) if args.circuit else DemSpec(args.dem)
    total = count_shots(args.input, in_format, experiment.dem().num_detectors)
    bar, advance = progress(total, "decoding") if sys.stderr.isatty() else (contextlib.nullcontext(), None)
    with bar:
        result = decode_shot_file(experiment, args.decoder, args.input, in_format, args.out, out_format,
                                  model=args.model, matching=args.matching, obs_path=args.obs_in,
                                  obs_format=obs_format, on_progress=advance)
    result["command"] = command_line()
    table = Table(title=f"nqec decode: {result['decoder']} on {experiment.label()}, {result['shots']:,} shots "
                        f"-> {args.out}")
    for column in ("decoder", "errors", "LER/shot [95% CI]", "shots/s"):
        table.add_column(column, justify="right")
    if args.obs_in:
        for record in result["records"].values():
            low, high = record["ler_ci"]
            table.add_row(record["decoder"], str(record["errors"]), f"{record['ler']:.3e} [{low:.2e}, {high:.2e}]",
                          f"{record['shots_per_s'] or 0:,.0f}")
        table.caption = (f"LER / matching LER {_ratio(result['ler_ratio'])}, "
                         f"/ correlated matching LER {_ratio(result['correlated_ratio'])} (same shots)")
    else:
        table.add_row(result["decoder"], "-", "- (give --obs-in)", f"{result['decode_shots_per_s'] or 0:,.0f}")
    emit(table, result, args.json)
    return 0


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def register(commands) -> None:
    formats = "b8, 01, r8, ptb64, hits or dets"
    decode = commands.add_parser("decode", help="decode a shot file (b8, 01, r8, ptb64, hits, dets) of your circuit")
    source = decode.add_mutually_exclusive_group(required=True)
    source.add_argument("--circuit", metavar="FILE.stim", help="the Stim circuit the shots come from")
    source.add_argument("--dem", metavar="FILE.dem", help="its detector error model (matching decoders only)")
    decode.add_argument("--in", dest="input", required=True, metavar="FILE", help="detection events, one record per shot")
    decode.add_argument("--in-format", default=None, help=f"{formats} (default: the --in file's extension)")
    decode.add_argument("--out", required=True, metavar="FILE", help="predicted observable flips (written when done)")
    decode.add_argument("--out-format", default=None, help=f"{formats} (default: the --out file's extension)")
    decode.add_argument("--decoder", default="matching", help="decoder name (default: matching)")
    decode.add_argument("--model", default=None, help="a shipped model name or a bundle path (neural decoders)")
    decode.add_argument("--matching", choices=["uncorrelated", "correlated"], default=None,
                        help="matching mode of --decoder matching or of a neural pipeline's matching stage")
    decode.add_argument("--obs-in", default=None, metavar="FILE",
                        help="the shots' true observable flips: report LER beside both PyMatching modes")
    decode.add_argument("--obs-in-format", default=None,
                        help=f"{formats} (default: the --obs-in file's extension)")
    decode.add_argument("--json", default=None, help="write the result to this JSON file")
    decode.set_defaults(func=cmd_decode)
