"""``nqec circuit``: write a memory experiment's Stim circuit, under a noise model or a device noise file."""

from __future__ import annotations

import argparse
import sys

from nqec.commands.common import add_experiment_args


def cmd_circuit(args: argparse.Namespace) -> int:
    from decoder.device_noise import DeviceNoise, resolve_device
    from decoder.spec import CodeSpec

    rounds = args.distance if args.rounds is None else args.rounds
    if args.noise_file:
        circuit = DeviceNoise.from_file(args.noise_file).circuit(args.distance, rounds, args.basis)
        noise = f"device noise {resolve_device(args.noise_file)}"
    else:
        spec = CodeSpec(args.distance, rounds, args.p, basis=args.basis, noise=args.noise)
        circuit, noise = spec.circuit(), f"{spec.noise} p={spec.p:g}"
    if args.out == "-":
        sys.stdout.write(str(circuit) + "\n")
        return 0
    circuit.to_file(args.out)
    print(f"wrote {args.out}: d={args.distance} r={rounds} {args.basis.upper()}-basis memory, {noise}, "
          f"{circuit.num_detectors} detectors, {circuit.num_observables} observable(s)")
    return 0


def register(commands) -> None:
    parser = commands.add_parser("circuit", help="write a rotated surface-code memory circuit (Stim format)")
    add_experiment_args(parser, sweep=False)
    parser.add_argument("--noise-file", default=None,
                        help="device noise (TOML or JSON; per-qubit and per-coupler rates, see decoder/device_noise.py), "
                             "or a shipped one by name (example); replaces --noise and -p")
    parser.add_argument("--out", default="-", help="circuit file to write (default: standard output)")
    parser.set_defaults(func=cmd_circuit)
