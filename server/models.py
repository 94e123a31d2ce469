"""The models a server offers: neural bundles and, per supported spec, matching in both modes.

A pre-decoder bundle is served twice: by its name (``predecoder+matching``, hard commits) and
as ``{name}-guided`` (``guided-matching``); for experiments of any length (DecodeStream), as
``{name}-guided-d{d}-p{p}-{basis}-{noise}`` (windowed guided matching) for every any-length family."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np

from decoder.bundle import MANIFEST, PIPELINES, Bundle, shipped_models
from decoder.errors import NqecError
from decoder.interface import Decoder
from decoder.layout import STABILIZER_TYPES, Layout
from decoder.matching import MatchingDecoder
from decoder.spec import CodeSpec
from decoder.windowed import SlidingWindowDecoder
from decoder.windowed_guided import guided_windows

log = logging.getLogger(__name__)

# Matching models every server offers besides those of its bundles' specs.
DEFAULT_MATCHING_SPECS = tuple(CodeSpec(d, d, p) for d in (3, 5, 7, 9) for p in (0.001, 0.003, 0.005))
# Any-length (windowed) families offered besides those of the bundles' specs: their window graphs
# are built at start and held (~0.3 GiB at d=9 in correlated mode for every p), so one p only.
DEFAULT_ANY_LENGTH_SPECS = tuple(CodeSpec(d, d, 0.003) for d in (3, 5, 7, 9))


def matching_model_name(spec: CodeSpec, correlated: bool = False) -> str:
    """Served name of the matching model for ``spec``, e.g. ``matching-d5-r5-p0.003-z-depolarizing``,
    or of its correlated twin, ``matching-correlated-d5-r5-p0.003-z-depolarizing``."""
    mode = "matching-correlated" if correlated else "matching"
    return f"{mode}-d{spec.distance}-r{spec.rounds}-p{spec.p:g}-{spec.basis}-{spec.noise}"


def family_model_name(spec: CodeSpec, correlated: bool = False) -> str:
    """Served name of the windowed matching model for experiments of any length, e.g.
    ``matching-d5-p0.003-z-depolarizing`` (``spec.rounds`` is not part of it)."""
    mode = "matching-correlated" if correlated else "matching"
    return f"{mode}-d{spec.distance}-p{spec.p:g}-{spec.basis}-{spec.noise}"


def guided_family_model_name(bundle: str, spec: CodeSpec) -> str:
    """Served name of a pre-decoder bundle's windowed guided matching for experiments of any length,
    e.g. ``predecoder-d5-int8-guided-d5-p0.003-z-depolarizing``."""
    return f"{bundle}-guided-d{spec.distance}-p{spec.p:g}-{spec.basis}-{spec.noise}"


@dataclasses.dataclass
class ServedModel:
    """One servable model: its pipeline, spec and what clients need to talk to it.

    A model of fixed-length experiments has a ``decoder``; a model of experiments of any
    length has a ``windowed`` decoder instead (DecodeStream only), and its
    ``detectors_per_round`` is [first slice, every middle slice, final slice]."""

    name: str
    kind: str  # matching, predecoder, transformer
    decoder_name: str
    spec: CodeSpec
    decoder: Decoder | None
    detectors_per_round: list[int]
    metrics: dict
    windowed: SlidingWindowDecoder | None = None

    @property
    def detector_bytes(self) -> int:
        return (self.decoder.num_detectors + 7) // 8

    @property
    def num_observables(self) -> int:
        return (self.windowed or self.decoder).num_observables


def detectors_per_round(spec: CodeSpec) -> list[int]:
    """Detectors of each time slice, in order (empty when detectors are not in round order, or the
    circuit has no (x, y, t) detector layout)."""
    try:
        layout = Layout.from_circuit(spec.circuit())
    except NqecError:
        return []
    if np.any(np.diff(layout.t_index) < 0):
        return []  # detectors are not in round order: streaming is not offered for this model
    return np.bincount(layout.t_index, minlength=layout.shape[1]).tolist()


def slice_layouts(spec: CodeSpec, slices: list[int], pb2) -> list:
    """``SliceLayout`` messages of the given time slices of ``spec``'s circuit: each detector's
    stabilizer type and (x, y) in packing order."""
    if not slices:
        return []
    layout = Layout.from_circuit(spec.circuit())
    types = np.array(STABILIZER_TYPES)[layout.type_index]
    x = np.array(layout.x_coords)[layout.x_index]
    y = np.array(layout.y_coords)[layout.y_index]
    return [pb2.SliceLayout(types=types[layout.t_index == t].tolist(), x=x[layout.t_index == t].tolist(),
                            y=y[layout.t_index == t].tolist()) for t in slices]


def windowed_model(spec: CodeSpec, correlated: bool, graphs_of: SlidingWindowDecoder | None = None) -> ServedModel:
    """Windowed matching of ``spec``'s family (any number of rounds), default window sizes;
    ``graphs_of``: the correlated twin whose window graphs an uncorrelated model shares."""
    windowed = SlidingWindowDecoder(spec, correlations=correlated, graphs_of=graphs_of)
    return ServedModel(family_model_name(spec, correlated), "matching", windowed.name, spec, None,
                       [windowed.first_slice, windowed.bulk_slice, windowed.final_slice], {}, windowed)


def load_models(models_dir: str | Path | None = None, shipped: bool = True,
                matching_specs: tuple[CodeSpec, ...] = DEFAULT_MATCHING_SPECS,
                any_length_specs: tuple[CodeSpec, ...] = DEFAULT_ANY_LENGTH_SPECS,
                any_length: bool = True) -> dict[str, ServedModel]:
    """Shipped bundles, bundles under ``models_dir`` and matching models, by served name: fixed-length
    matching (both modes) for ``matching_specs`` and every bundle's spec; unless ``any_length`` is
    False, any-length matching (both modes) and each pre-decoder's windowed guided matching for
    ``any_length_specs`` and every bundle's spec."""
    bundles = [Bundle.load(name) for name in shipped_models()] if shipped else []
    if models_dir is not None:
        bundles += [Bundle.load(path.parent) for path in sorted(Path(models_dir).glob(f"*/{MANIFEST}"))]
    models: dict[str, ServedModel] = {}
    for bundle in bundles:
        for pipeline in PIPELINES[bundle.kind]:
            decoder = bundle.decoder(pipeline=pipeline)
            name = bundle.name if pipeline == PIPELINES[bundle.kind][0] else f"{bundle.name}-{pipeline.split('-')[0]}"
            models[name] = ServedModel(name, bundle.kind, decoder.name, bundle.spec, decoder,
                                       detectors_per_round(bundle.spec), bundle.manifest.get("metrics", {}))
    for spec in {*matching_specs, *(b.spec for b in bundles)}:
        for correlated in (False, True):
            decoder = MatchingDecoder.from_spec(spec, correlations=correlated)
            name = matching_model_name(spec, correlated)
            models[name] = ServedModel(name, "matching", decoder.name, spec, decoder, detectors_per_round(spec), {})
    families = {*any_length_specs, *(b.spec for b in bundles)} if any_length else set()
    for spec in families:
        correlated_family = windowed_model(spec, True)
        for family in (windowed_model(spec, False, graphs_of=correlated_family.windowed), correlated_family):
            models[family.name] = family
    shared: dict[tuple, object] = {}  # cutting recipe -> the first guided windowed decoder with it
    for bundle in bundles:
        if bundle.kind == "predecoder":
            for spec in families:
                windowed = guided_windows(bundle, spec)
                if windowed.cutter() in shared:  # e.g. a bundle and its 8-bit copy: one set of window matchers
                    windowed = guided_windows(bundle, spec, windows_of=shared[windowed.cutter()])
                shared.setdefault(windowed.cutter(), windowed)
                name = guided_family_model_name(bundle.name, spec)
                models[name] = ServedModel(name, bundle.kind, windowed.name, spec, None,
                                           [windowed.first_slice, windowed.bulk_slice, windowed.final_slice],
                                           bundle.manifest.get("metrics", {}), windowed)
    log.info("serving %d models", len(models))
    return models


def model_info(model: ServedModel, pb2, max_shots_per_request: int):
    """The ``ModelInfo`` message of a served model."""
    spec, windowed = model.spec, model.windowed
    if windowed is None:
        shape = dict(rounds=spec.rounds, num_detectors=model.decoder.num_detectors,
                     slices=slice_layouts(spec, list(range(len(model.detectors_per_round))), pb2))
    else:  # slices 0, 1 and 3 of a 3-round experiment: first, middle, final
        shape = dict(any_length=True, window_commit=windowed.commit, window_buffer=windowed.buffer,
                     slices=slice_layouts(dataclasses.replace(spec, rounds=3), [0, 1, 3], pb2))
    return pb2.ModelInfo(
        name=model.name, kind=model.kind, decoder=model.decoder_name, distance=spec.distance, p=spec.p,
        basis=spec.basis, noise=spec.noise, num_observables=model.num_observables,
        detectors_per_round=model.detectors_per_round, metrics_json=json.dumps(model.metrics),
        max_shots_per_request=max_shots_per_request, **shape)
