"""The ``nqec`` command line: wiring only. Each area's subcommands live in ``nqec/commands/`` and
import their libraries lazily, so ``nqec serve`` never pulls in torch or the training code."""

from __future__ import annotations

import argparse
import sys

from decoder.errors import NqecError
from nqec.commands import bench, circuit, client, decode, demo, evaluate, fpga, models, noise, serve, train

AREAS = (evaluate, decode, demo, train, models, serve, client, fpga, bench, noise, circuit)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nqec", description="Neural decoders for surface-code QEC.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for area in AREAS:
        area.register(commands)
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
