"""``nqec client decode``: decode Stim shots on a running service and check them in-process."""

from __future__ import annotations

import argparse

from decoder.errors import NqecError
from nqec.commands.common import add_experiment_args, experiment, positive_float, positive_int


def served_model_name(model: str, spec) -> str:
    """``matching`` and ``matching-correlated`` mean the server's matching model of that mode for
    ``spec``; other names pass through."""
    from server.models import matching_model_name

    if model in ("matching", "matching-correlated"):
        return matching_model_name(spec, correlated=model == "matching-correlated")
    return model


def _bundle_name(info) -> str:
    """The bundle behind a served neural model: ``X`` serves bundle X's first pipeline and
    ``X-guided`` its guided-matching (as ``server.models.load_models`` names them)."""
    from decoder.bundle import PIPELINES

    if info.decoder == PIPELINES[info.kind][0]:
        return info.name
    return info.name.removesuffix("-" + info.decoder.split("-")[0])


def cmd_client_decode(args: argparse.Namespace) -> int:
    """Sample ``args``' experiment, decode it remotely and with the same pipeline in-process; the
    model decodes at the spec the server gives it (a bundle's own), whatever -p and --noise say."""
    import grpc
    import numpy as np

    from decoder.registry import build_decoder
    from decoder.spec import CodeSpec
    from server.client import DecoderClient

    def remote(call, *call_args, **kwargs):
        try:
            return call(*call_args, **kwargs)
        except grpc.RpcError as exc:
            raise NqecError(f"server at {args.target}: {exc.code().name}: {exc.details()}") from None

    spec = experiment(args)
    name = served_model_name(args.model, spec)
    client = DecoderClient([t for t in args.target.split(",") if t], token=args.token)
    info = remote(client.model_info, name)
    if info.any_length:
        raise NqecError(f"model {name!r} decodes experiments of any length through DecodeStream; client decode sends "
                        f"whole experiments: give a fixed-length one such as {served_model_name('matching', spec)}")
    served = CodeSpec(info.distance, info.rounds, info.p, info.basis, info.noise)
    if (served.distance, served.rounds, served.basis) != (spec.distance, spec.rounds, spec.basis):
        raise NqecError(f"model {name!r} decodes {served.label()}; -d/-r/--basis give {spec.label()}")
    local = build_decoder(info.decoder, served, None if info.kind == "matching" else _bundle_name(info))
    events, observables = spec.circuit().compile_detector_sampler(seed=args.seed).sample(
        args.shots, separate_observables=True, bit_packed=True)
    flips, stages, server_seconds = remote(client.decode, name, events, timeout=args.timeout)
    agree = np.array_equal(flips, local.decode_batch(events))
    actual = np.unpackbits(observables, axis=1, count=info.num_observables, bitorder="little").astype(bool)
    errors = int(np.any(flips != actual, axis=1).sum())
    print(f"{args.shots} shots of {spec.label()} via {args.target}, model {name} ({info.decoder} at {served.label()}): "
          f"{errors} logical errors (LER {errors / args.shots:.3e}), server decode {server_seconds * 1e3:.2f} ms, "
          f"network answered {np.mean(stages == 1):.1%}, agrees with in-process decoding: {'yes' if agree else 'NO'}")
    return 0 if agree else 1


def register(commands) -> None:
    client = commands.add_parser("client", help="talk to a running decoding service")
    actions = client.add_subparsers(dest="client_command", required=True, metavar="ACTION")
    decode = actions.add_parser("decode", help="sample with Stim, decode remotely, check in-process")
    decode.add_argument("--target", default="127.0.0.1:50051", help="host:port, or a comma list of replicas")
    decode.add_argument("--model", default="matching",
                        help="a name ListModels offers; 'matching' and 'matching-correlated' = that mode for -d/-r/-p")
    add_experiment_args(decode, sweep=False)
    decode.add_argument("--shots", type=positive_int, default=10_000)
    decode.add_argument("--seed", type=int, default=0)
    decode.add_argument("--token", default=None)
    decode.add_argument("--timeout", type=positive_float, default=10.0, metavar="SECONDS",
                        help="deadline of each Decode call; a replica that misses it is skipped (default 10)")
    decode.set_defaults(func=cmd_client_decode)
