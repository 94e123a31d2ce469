"""``nqec client decode``: decode Stim shots on a running service and check them in-process."""

from __future__ import annotations

import argparse

from decoder.errors import NqecError
from nqec.commands.common import add_experiment_args, experiment, positive_int


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

    spec = experiment(args)
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


def register(commands) -> None:
    client = commands.add_parser("client", help="talk to a running decoding service")
    actions = client.add_subparsers(dest="client_command", required=True, metavar="ACTION")
    decode = actions.add_parser("decode", help="sample with Stim, decode remotely, check in-process")
    decode.add_argument("--target", default="127.0.0.1:50051", help="host:port, or a comma list of replicas")
    decode.add_argument("--model", default="matching", help="served model name ('matching' = matching for -d/-r/-p)")
    add_experiment_args(decode, sweep=False)
    decode.add_argument("--shots", type=positive_int, default=10_000)
    decode.add_argument("--seed", type=int, default=0)
    decode.add_argument("--token", default=None)
    decode.set_defaults(func=cmd_client_decode)
