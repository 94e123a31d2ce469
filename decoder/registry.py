"""Build a decoder by name for an experiment: the names the CLI, sinter and the server accept.

Modes are options, names are entries: ``matching`` and ``matching-correlated`` are PyMatching
in its two modes and decode any experiment's DEM; a neural pipeline takes the matching mode of
its residual/fallback stage as the ``matching`` option (default: the bundle's) and needs a rotated
surface-code memory circuit whose detectors carry coordinates and whose edge directions its
model knows.
"""

from __future__ import annotations

import stim

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
    """Build decoder ``name`` for the experiment ``spec`` (a :class:`CodeSpec`, a circuit file's
    :class:`~decoder.experiment.CircuitSpec`, or either :func:`~decoder.experiment.with_dem`);
    ``model`` is a shipped model name or a bundle path.

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
    kind = DECODER_KINDS[name]
    if kind is None:
        if model is not None:
            raise NqecError(f"decoder {name!r} takes no --model")
        return build_matching(name, spec.dem(), matching)
    if matching is not None:
        correlations_of(matching)  # a clear error for an unknown mode
    if spec.family != "rotated_surface":
        raise NqecError(f"decoder {name!r} needs a rotated surface-code memory circuit: {spec.surface_code_problem}")
    from decoder.bundle import Bundle

    bundle = Bundle.load(model or DEFAULT_MODELS[kind].format(distance=spec.distance))
    if bundle.kind != kind:
        raise NqecError(f"model {bundle.name!r} is a {bundle.kind} model; decoder {name!r} needs a {kind} model")
    decoder = bundle.decoder(spec, pipeline=name, matching=matching)
    geometry = getattr(decoder, "geometry", None)
    if geometry is not None and (geometry.edges.direction < 0).any():
        raise NqecError(f"model {bundle.name!r} has never seen {_unseen_directions(geometry)} of this circuit's "
                        f"matching graph; it knows {len(geometry.directions)} directions")
    return decoder


WINDOWED = ("matching", "matching-correlated", "guided-matching")  # decoders with a windowed form


def build_windowed_decoder(name: str, spec: CodeSpec, model: str | None = None, *, matching: str | None = None):
    """Decoder ``name`` in its sliding-window form (experiments of any length, decoded as rounds
    arrive) for ``spec``'s family, as a fixed-length decoder of ``spec.rounds`` rounds.

    Example:
        >>> build_windowed_decoder("matching-correlated", CodeSpec(3, 20, 0.003)).name
        'windowed-matching-correlated'
    """
    from decoder.windowed import SlidingWindowDecoder, WindowedDecoder

    if name not in WINDOWED:
        raise NqecError(f"decoder {name!r} has no windowed form; --windowed takes {', '.join(WINDOWED)}")
    if not isinstance(spec, CodeSpec):
        raise NqecError("--windowed needs a code spec (-d/-r/-p): window graphs are cut from its reference circuits")
    if name == "guided-matching":
        from decoder.bundle import Bundle
        from decoder.windowed_guided import guided_windows

        windowed = guided_windows(Bundle.load(model or DEFAULT_MODELS["predecoder"]), spec, matching=matching)
    else:
        if model is not None:
            raise NqecError(f"decoder {name!r} takes no --model")
        correlated = name == "matching-correlated" or correlations_of(matching or "uncorrelated")
        windowed = SlidingWindowDecoder(spec, correlations=correlated)
    return WindowedDecoder(windowed, spec.rounds)


def build_matching(name: str, dem: stim.DetectorErrorModel, matching: str | None = None) -> MatchingDecoder:
    """PyMatching on any DEM: ``name`` is ``matching`` (``matching`` mode, default uncorrelated) or
    ``matching-correlated``.

    Example:
        >>> build_matching("matching-correlated", CodeSpec(3, 3, 0.001).dem()).correlations
        True
    """
    if matching is not None:
        correlations_of(matching)  # a clear error for an unknown mode
    if name == "matching-correlated":
        if matching == "uncorrelated":
            raise NqecError("decoder 'matching-correlated' is correlated matching; drop --matching uncorrelated")
        matching = "correlated"
    elif name != "matching":
        raise NqecError(f"decoder {name!r} is not matching; expected matching or matching-correlated")
    return MatchingDecoder(dem, correlations=correlations_of(matching or MATCHING_MODES[0]))


def _unseen_directions(geometry) -> str:
    """The edge directions of a pipeline's geometry missing from its model's vocabulary, as text."""
    types = ("X", "Z", "boundary")
    layout, unseen = geometry.layout, set()
    for a, b in geometry.edges.detectors[geometry.edges.direction < 0]:
        if b < 0:
            unseen.add(f"{types[layout.type_index[a]]}-boundary")
        else:
            step = (int(layout.t_index[b] - layout.t_index[a]), int(layout.y_index[b] - layout.y_index[a]),
                    int(layout.x_index[b] - layout.x_index[a]))
            unseen.add(f"{types[layout.type_index[a]]}-{types[layout.type_index[b]]} (dt, dy, dx)={step}")
    shown = sorted(unseen)
    return f"{len(shown)} edge direction{'s' if len(shown) > 1 else ''} ({', '.join(shown[:3])}{', ...' if len(shown) > 3 else ''})"
