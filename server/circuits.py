"""Models a server offers for the user's own circuit files (``nqec serve --circuit NAME=FILE``).

For a circuit served as ``NAME``: ``NAME-matching`` and ``NAME-matching-correlated`` (PyMatching
on the circuit's DEM, both modes), and for every bundle whose network fits the circuit (a rotated
surface-code memory experiment with the edge directions it was trained on)
``NAME-<bundle>`` (its default pipeline) and ``NAME-<bundle>-guided`` (a pre-decoder's guided
matching). A bundle that does not fit is skipped with one log line saying why. Each model decodes
fixed-length experiments of that circuit (Decode, and DecodeStream when its detectors are in
round order).

Example:
    >>> import pathlib, stim, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "rep.stim"
    >>> stim.Circuit.generated("repetition_code:memory", distance=3, rounds=3,
    ...                        before_round_data_depolarization=0.01).to_file(path)
    >>> sorted(circuit_models("rep", path))
    ['rep-matching', 'rep-matching-correlated']
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from decoder.bundle import MANIFEST, PIPELINES, Bundle, shipped_models
from decoder.errors import NqecError
from decoder.experiment import CircuitSpec
from decoder.matching import MatchingDecoder
from server.models import ServedModel, detectors_per_round

log = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def parse_circuit_option(option: str) -> tuple[str, str]:
    """``"NAME=FILE"`` -> ``(NAME, FILE)``; NqecError naming the expected form otherwise.

    >>> parse_circuit_option("chip-a=/data/chip_a.stim")
    ('chip-a', '/data/chip_a.stim')
    """
    name, equals, path = option.partition("=")
    if not equals or not path or not NAME_PATTERN.fullmatch(name):
        raise NqecError(f"--circuit expects NAME=FILE.stim with NAME of letters, digits, '.', '_' or '-' "
                        f"(starting with a letter or digit), got {option!r}")
    return name, path


def circuit_models(name: str, path: str | Path, bundles: list[Bundle] | None = None) -> dict[str, ServedModel]:
    """The served models of circuit file ``path`` under ``name`` (see the module doc); ``bundles``
    default to the shipped ones. A file that is not a readable Stim memory circuit raises NqecError."""
    spec = CircuitSpec.from_file(path)
    bundles = [Bundle.load(model) for model in shipped_models()] if bundles is None else bundles
    slices = detectors_per_round(spec)
    about = {"experiment": spec.to_dict()}
    models = {}
    for correlated in (False, True):
        decoder = MatchingDecoder(spec.dem(), correlations=correlated)
        served = f"{name}-matching" + ("-correlated" if correlated else "")
        models[served] = ServedModel(served, "matching", decoder.name, spec, decoder, slices, about)
    if spec.surface_code_problem:
        log.info("circuit %s: serving matching only: the networks read rotated surface-code memory circuits; "
                 "%s", name, spec.surface_code_problem)
        bundles = []
    for bundle in bundles:
        for pipeline in PIPELINES[bundle.kind]:
            served = f"{name}-{bundle.name}" + ("" if pipeline == PIPELINES[bundle.kind][0]
                                                else f"-{pipeline.split('-')[0]}")
            try:
                decoder = bundle.decoder(spec, pipeline=pipeline)
            except NqecError as exc:
                log.info("circuit %s: not serving %s: %s", name, served, exc)
                continue
            models[served] = ServedModel(served, bundle.kind, decoder.name, spec, decoder, slices, about)
    return models


def load_circuit_models(options: list[str], models_dir: str | None = None) -> dict[str, ServedModel]:
    """Every ``NAME=FILE`` option's models (with the shipped bundles and those under ``models_dir``)."""
    if not options:
        return {}
    bundles = [Bundle.load(model) for model in shipped_models()]
    if models_dir is not None:
        bundles += [Bundle.load(manifest.parent) for manifest in sorted(Path(models_dir).glob(f"*/{MANIFEST}"))]
    models = {}
    for name, path in map(parse_circuit_option, options):
        models = join_models(models, circuit_models(name, path, bundles))
    return models


def join_models(models: dict[str, ServedModel], circuits: dict[str, ServedModel]) -> dict[str, ServedModel]:
    """``models`` and the circuit models; a circuit model named like another model raises NqecError.

    >>> join_models({"a": 1}, {"a": 2})
    Traceback (most recent call last):
    ...
    decoder.errors.NqecError: --circuit: model name 'a' is already served; choose another NAME
    """
    for served in circuits:
        if served in models:
            raise NqecError(f"--circuit: model name {served!r} is already served; choose another NAME")
    return {**models, **circuits}

