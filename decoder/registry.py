"""Build a decoder by name for a code spec: the names the CLI, sinter and the server accept.

Modes are options, names are entries: ``matching`` and ``matching-correlated`` are PyMatching
in its two modes; a neural pipeline takes the matching mode of its residual/fallback stage
as the ``matching`` option (default: the bundle's).
"""

from __future__ import annotations

from decoder.errors import NqecError
from decoder.interface import Decoder
from decoder.matching import MATCHING_MODES, MatchingDecoder, correlations_of
from decoder.spec import CodeSpec

# decoder name -> the bundle kind it runs (None: no model)
DECODER_KINDS = {"matching": None, "matching-correlated": None, "predecoder+matching": "predecoder",
                 "guided-matching": "predecoder", "transformer": "transformer"}
DEFAULT_MODELS = {"predecoder": "predecoder-d5", "transformer": "transformer-d{distance}"}


def decoder_names() -> list[str]:
    """Names accepted by :func:`build_decoder`."""
    return sorted(DECODER_KINDS)


def build_decoder(name: str, spec: CodeSpec, model: str | None = None, *, matching: str | None = None) -> Decoder:
    """Build decoder ``name`` for ``spec``; ``model`` is a shipped model name or a bundle path.

    ``matching`` (``"uncorrelated"`` or ``"correlated"``) is the matching mode: of the decoder
    itself for ``matching`` (default uncorrelated), of the residual or fallback stage for a
    neural pipeline (default: the mode recorded in the bundle).

    Example:
        >>> build_decoder("matching", CodeSpec(3, 3, 0.001)).name
        'matching'
        >>> build_decoder("matching", CodeSpec(3, 3, 0.001), matching="correlated").name
        'matching-correlated'
    """
    if name not in DECODER_KINDS:
        raise NqecError(f"unknown decoder {name!r}; expected one of {', '.join(decoder_names())}")
    if matching is not None:
        correlations_of(matching)  # a clear error for an unknown mode
    kind = DECODER_KINDS[name]
    if kind is None:
        if model is not None:
            raise NqecError(f"decoder {name!r} takes no --model")
        if name == "matching-correlated":
            if matching == "uncorrelated":
                raise NqecError("decoder 'matching-correlated' is correlated matching; drop --matching uncorrelated")
            matching = "correlated"
        return MatchingDecoder.from_spec(spec, correlations=correlations_of(matching or MATCHING_MODES[0]))
    from decoder.bundle import Bundle

    bundle = Bundle.load(model or DEFAULT_MODELS[kind].format(distance=spec.distance))
    if bundle.kind != kind:
        raise NqecError(f"model {bundle.name!r} is a {bundle.kind} model; decoder {name!r} needs a {kind} model")
    return bundle.decoder(spec, pipeline=name, matching=matching)
