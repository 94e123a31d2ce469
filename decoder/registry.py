"""Build a decoder by name for a code spec: the names the CLI and the server accept."""

from __future__ import annotations

from typing import Callable

from decoder.errors import NqecError
from decoder.interface import Decoder
from decoder.matching import MatchingDecoder
from decoder.spec import CodeSpec

_BUILDERS: dict[str, Callable[[CodeSpec, str | None], Decoder]] = {
    "matching": lambda spec, model: MatchingDecoder.from_spec(spec),
}


def decoder_names() -> list[str]:
    """Names accepted by :func:`build_decoder`."""
    return sorted(_BUILDERS)


def build_decoder(name: str, spec: CodeSpec, model: str | None = None) -> Decoder:
    """Build the decoder ``name`` (e.g. ``"matching"``) for ``spec``; ``model`` names a bundle."""
    if name not in _BUILDERS:
        raise NqecError(f"unknown decoder {name!r}; expected one of {', '.join(decoder_names())}")
    return _BUILDERS[name](spec, model)
