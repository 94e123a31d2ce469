"""The models a server offers: neural bundles and, per supported spec, matching in both modes.

A pre-decoder bundle is served twice: by its name (``predecoder+matching``, hard commits) and
as ``{name}-guided`` (``guided-matching``)."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np

from decoder.bundle import MANIFEST, PIPELINES, Bundle, shipped_models
from decoder.interface import Decoder
from decoder.layout import Layout
from decoder.matching import MatchingDecoder
from decoder.spec import CodeSpec

log = logging.getLogger(__name__)

# Matching models every server offers besides those of its bundles' specs.
DEFAULT_MATCHING_SPECS = tuple(CodeSpec(d, d, p) for d in (3, 5, 7, 9) for p in (0.001, 0.003, 0.005))


def matching_model_name(spec: CodeSpec, correlated: bool = False) -> str:
    """Served name of the matching model for ``spec``, e.g. ``matching-d5-r5-p0.003-z-depolarizing``,
    or of its correlated twin, ``matching-correlated-d5-r5-p0.003-z-depolarizing``."""
    mode = "matching-correlated" if correlated else "matching"
    return f"{mode}-d{spec.distance}-r{spec.rounds}-p{spec.p:g}-{spec.basis}-{spec.noise}"


@dataclasses.dataclass
class ServedModel:
    """One servable model: its pipeline, spec and what clients need to talk to it."""

    name: str
    kind: str  # matching, predecoder, transformer
    decoder_name: str
    spec: CodeSpec
    decoder: Decoder
    detectors_per_round: list[int]
    metrics: dict

    @property
    def detector_bytes(self) -> int:
        return (self.decoder.num_detectors + 7) // 8

    @property
    def observable_bytes(self) -> int:
        return (self.decoder.num_observables + 7) // 8


def detectors_per_round(spec: CodeSpec) -> list[int]:
    """Detectors of each time slice, in order (empty when detectors are not in round order)."""
    layout = Layout.from_circuit(spec.circuit())
    if np.any(np.diff(layout.t_index) < 0):
        return []  # detectors are not in round order: streaming is not offered for this model
    return np.bincount(layout.t_index, minlength=layout.shape[1]).tolist()


def load_models(models_dir: str | Path | None = None, shipped: bool = True,
                matching_specs: tuple[CodeSpec, ...] = DEFAULT_MATCHING_SPECS) -> dict[str, ServedModel]:
    """Shipped bundles, bundles under ``models_dir`` and matching models, by served name."""
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
    log.info("serving %d models", len(models))
    return models


def model_info(model: ServedModel, pb2, max_shots_per_request: int):
    """The ``ModelInfo`` message of a served model."""
    spec = model.spec
    return pb2.ModelInfo(
        name=model.name, kind=model.kind, decoder=model.decoder_name, distance=spec.distance, rounds=spec.rounds,
        p=spec.p, basis=spec.basis, noise=spec.noise, num_detectors=model.decoder.num_detectors,
        num_observables=model.decoder.num_observables, detectors_per_round=model.detectors_per_round,
        metrics_json=json.dumps(model.metrics), max_shots_per_request=max_shots_per_request)
