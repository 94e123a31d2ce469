"""``nqec train``, ``calibrate``, ``quantize`` and ``export``: make and tune model bundles."""

from __future__ import annotations

import argparse

from nqec.commands.common import add_experiment_args, emit, experiment, float_list, positive_int

def cmd_train(args: argparse.Namespace) -> int:
    """Options the user gave override the config dataclass's defaults, the one place they are set."""
    from training.export import export_bundle
    from training.report import command_line

    given = {key: value for key, value in vars(args).items() if key not in ("command", "model_kind", "func")}
    code_flags = {"distance": "-d", "rounds": "-r", "ps": "-p", "noise": "--noise", "basis": "--basis"}
    if "circuit" in given and set(given) & set(code_flags):
        from decoder.errors import NqecError

        raise NqecError(f"--circuit is the whole experiment; drop {', '.join(code_flags[k] for k in code_flags if k in given)}")
    if "ps" in given:
        given["ps"] = tuple(given["ps"])
    if args.model_kind == "predecoder":
        from training.train_predecoder import PreDecoderConfig, train_predecoder

        config = PreDecoderConfig(**given)
        checkpoint = train_predecoder(config, command_line())
    else:
        from training.train_transformer import TransformerConfig, train_transformer

        config = TransformerConfig(**given)
        checkpoint = train_transformer(config, command_line())
    if checkpoint is not None:
        bundle = export_bundle(checkpoint, config.out)
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
    from training.export import update_manifest
    from training.report import command_line

    bundle = Bundle.load(args.model)
    spec = experiment(args)
    reliability = reliability_curve(bundle, spec, min(args.shots, 20_000), args.seed + 1)
    emit(_reliability_table(bundle.name, reliability), reliability, None)
    result = calibrate_guided(bundle, spec, args.shots, args.seed)
    result.update(reliability=reliability, command=command_line())
    table = Table(title=f"guided-matching calibration of {bundle.name} on {args.shots:,} held-out shots "
                        f"({spec.label()}); mix 0 = matching alone")
    for column in ("matching", "mix", "temperature", "logical errors"):
        table.add_column(column, justify="right")
    for row in result["table"]:
        table.add_row(row["matching"], f"{row['mix']:g}", f"{row['temperature']:g}", str(row["errors"]))
    emit(table, result, args.json)
    best = {key: result[key] for key in ("matching", "mix", "temperature")}
    print(f"best: {best['matching']} matching, mix {best['mix']:g}, temperature {best['temperature']:g}")
    if args.write:
        update_manifest(bundle.path, lambda manifest: manifest["predecoder"].update(
            guided=best, guided_calibration=result))
        print(f"wrote the mix into {bundle.path / 'manifest.json'}")
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from decoder.bundle import Bundle
    from training.quantize import quantize_bundle
    from training.report import command_line

    parent = Bundle.load(args.model)
    spec = experiment(args) if args.distance or args.circuit else None
    bundle = quantize_bundle(parent, args.out, args.shots, args.seed, spec, command_line())
    print(f"wrote bundle {bundle.path}: {parent.name} with 8-bit weights and activations, calibrated on "
          f"{args.shots:,} shots of {(spec or parent.spec).label()}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from training.export import export_bundle

    bundle = export_bundle(args.checkpoint, args.out, args.name)
    print(f"wrote bundle {bundle.path}")
    return 0


def register(commands) -> None:
    train = commands.add_parser("train", help="train a neural decoder and write its bundle")
    kinds = train.add_subparsers(dest="model_kind", required=True, metavar="MODEL")
    for kind, config in (("predecoder", "PreDecoderConfig in training/train_predecoder.py"),
                         ("transformer", "TransformerConfig in training/train_transformer.py")):
        sub = kinds.add_parser(kind, help=f"train the {kind}", argument_default=argparse.SUPPRESS,
                               description=f"Train the {kind}; options left out take their defaults from {config}.")
        sub.add_argument("-d", "--distance", type=int)
        sub.add_argument("-r", "--rounds", type=int, help="rounds (default: the distance)")
        sub.add_argument("-p", dest="ps", metavar="P", type=float_list, help="p, or a comma list to train on a mixture")
        sub.add_argument("--noise", choices=["depolarizing", "si1000"])
        sub.add_argument("--basis", choices=["z", "x"])
        sub.add_argument("--size", choices=["fpga", "accurate"] if kind == "predecoder" else ["small", "base"])
        sub.add_argument("--steps", type=positive_int)
        sub.add_argument("--batch", type=positive_int)
        sub.add_argument("--lr", type=float)
        sub.add_argument("--seed", type=int)
        sub.add_argument("--val-every", type=positive_int)
        sub.add_argument("--val-shots", type=positive_int)
        sub.add_argument("--out", help="run directory: checkpoint, metrics, bundle")
        sub.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
        sub.add_argument("--init-from", metavar="CHECKPOINT" if kind == "transformer" else "CHECKPOINT|BUNDLE",
                         help="start from this checkpoint's weights with a fresh schedule (fine-tuning); "
                              "its provenance is kept in the new one"
                              + ("" if kind == "transformer" else "; a pre-decoder bundle (e.g. predecoder-d5) "
                                 "gives its weights, size and edge directions"))
        sub.add_argument("--workers", type=int,
                         help="DataLoader processes drawing Stim samples (0: in the training process)")
        if kind == "predecoder":
            sub.add_argument("--circuit", metavar="FILE.stim",
                             help="your own rotated surface-code memory circuit as the experiment, instead of "
                                  "-d/-r/-p/--noise/--basis; the bundle's manifest records its path, sha256 and text")
            sub.add_argument("--pos-weight", type=float, help="BCE weight of positive edges")
            sub.add_argument("--threshold", type=float,
                             help="edge probability above which an edge is applied (default: calibrated on validation shots)")
        else:
            sub.add_argument("--threshold", dest="fallback_threshold", metavar="THRESHOLD", type=float,
                             help="fall back to matching when |p - 0.5| is below this (default: calibrated)")
            sub.add_argument("--table-shots", type=int,
                             help="count this many samples once and train on each distinct syndrome's flip rate "
                                  "(small codes such as d=3; 0: stream fresh samples)")
            sub.add_argument("--table-tempering", type=float,
                             help="draw table syndromes with probability count**T (loss-weighted back to the data)")
        sub.set_defaults(func=cmd_train)

    calibrate = commands.add_parser("calibrate", help="calibrate guided matching's mix of network and prior")
    calibrate.add_argument("--model", default="predecoder-d5", help="a pre-decoder bundle (name or path)")
    add_experiment_args(calibrate, sweep=False, circuit=True)
    calibrate.add_argument("--shots", type=positive_int, default=40_000, help="held-out shots")
    calibrate.add_argument("--seed", type=int, default=424242)
    calibrate.add_argument("--write", action="store_true", help="store the best mix in the bundle's manifest")
    calibrate.add_argument("--json", default=None)
    calibrate.set_defaults(func=cmd_calibrate)

    quantize = commands.add_parser("quantize", help="an 8-bit copy of a bundle (onnxruntime static quantization)",
                                   description="Write an 8-bit copy of a bundle, its activation ranges calibrated "
                                               "on Stim shots: at -d/-p/... if given, else at the bundle's own spec.")
    quantize.add_argument("--model", required=True, help="a shipped model name or a bundle path")
    quantize.add_argument("--out", required=True, help="folder of the new bundle (its name is the folder's)")
    quantize.add_argument("--shots", type=positive_int, default=2000, help="Stim shots that calibrate the ranges")
    quantize.add_argument("--seed", type=int, default=0)
    add_experiment_args(quantize, sweep=False, circuit=True)  # the calibration experiment; default the bundle's
    quantize.set_defaults(func=cmd_quantize)

    export = commands.add_parser("export", help="turn a training checkpoint into a model bundle")
    export.add_argument("checkpoint")
    export.add_argument("--out", required=True)
    export.add_argument("--name", default=None, help="bundle name (default: the output folder's name)")
    export.set_defaults(func=cmd_export)
