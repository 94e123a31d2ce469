"""Build a decoder by name for a code spec: the names the CLI and the server accept."""

from __future__ import annotations

from decoder.errors import NqecError
from decoder.interface import Decoder
from decoder.matching import MatchingDecoder
from decoder.spec import CodeSpec

# decoder name -> the bundle kind it runs (None: no model)
DECODER_KINDS = {"matching": None, "predecoder+matching": "predecoder", "transformer": "transformer"}
DEFAULT_MODELS = {"predecoder": "predecoder-d5", "transformer": "transformer-d{distance}"}


def decoder_names() -> list[str]:
    """Names accepted by :func:`build_decoder`."""
    return sorted(DECODER_KINDS)


def build_decoder(name: str, spec: CodeSpec, model: str | None = None) -> Decoder:
    """Build decoder ``name`` for ``spec``; ``model`` is a shipped model name or a bundle path.

    Example:
        >>> build_decoder("matching", CodeSpec(3, 3, 0.001)).name
        'matching'
    """
    if name not in DECODER_KINDS:
        raise NqecError(f"unknown decoder {name!r}; expected one of {', '.join(decoder_names())}")
    kind = DECODER_KINDS[name]
    if kind is None:
        if model is not None:
            raise NqecError(f"decoder {name!r} takes no --model")
        return MatchingDecoder.from_spec(spec)
    from decoder.bundle import Bundle

    bundle = Bundle.load(model or DEFAULT_MODELS[kind].format(distance=spec.distance))
    if bundle.kind != kind:
        raise NqecError(f"model {bundle.name!r} is a {bundle.kind} model; decoder {name!r} needs a {kind} model")
    return bundle.decoder(spec)
