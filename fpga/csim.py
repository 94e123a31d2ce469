"""`nqec fpga csim`: hls4ml C simulation vs the float model, and LER of fixed vs float pipelines."""

from __future__ import annotations

import math
import time

import numpy as np

from decoder.predecoder import PreDecoderPipeline
from fpga.convert import FpgaDesign, stim_windows


def _pipeline(design: FpgaDesign, runner) -> PreDecoderPipeline:
    section = design.bundle.manifest["predecoder"]
    return PreDecoderPipeline(design.bundle.spec, runner, tuple(tuple(d) for d in section["directions"]),
                              section["window"], section["threshold"], section["require_lit"], section["isolated_only"])


def csim_report(design: FpgaDesign, shots: int, csim_windows: int = 10_000, seed: int = 1) -> dict:
    """Edge agreement, emulation bit-exactness, logit error and paired LER (fixed vs float)."""
    bundle = design.bundle
    rounds = bundle.layout.shape[1]
    windows = stim_windows(bundle, math.ceil(csim_windows / rounds), seed)[:csim_windows]
    start = time.perf_counter()
    csim = design.csim(windows)
    csim_seconds = time.perf_counter() - start
    emulated = design.emulate(windows)
    float_logits = bundle.run(windows).astype(np.float64)
    pipeline = _pipeline(design, bundle.run)
    mask = np.tile(pipeline.geometry.logit_mask, (math.ceil(len(windows) / rounds), 1, 1, 1))[: len(windows)]
    threshold = pipeline.logit_threshold
    agreement = float(np.mean((csim[mask] > threshold) == (float_logits[mask] > threshold)))
    exact_windows = np.all((csim == emulated).reshape(len(windows), -1), axis=1)

    float_pipeline, fixed_pipeline = pipeline, _pipeline(design, design.emulate)
    sampler = bundle.spec.circuit().compile_detector_sampler(seed=seed + 1)
    errors_float = errors_fixed = differing = done = 0
    while done < shots:
        n = min(20_000, shots - done)
        events, observables = sampler.sample(n, separate_observables=True)
        float_prediction = float_pipeline.decode_batch(events)
        fixed_prediction = fixed_pipeline.decode_batch(events)
        errors_float += int(np.any(float_prediction != observables, axis=1).sum())
        errors_fixed += int(np.any(fixed_prediction != observables, axis=1).sum())
        differing += int(np.any(float_prediction != fixed_prediction, axis=1).sum())
        done += n
    return {
        "model": bundle.name, "spec": bundle.spec.to_dict(), "seed": seed, "settings": design.settings,
        "csim_windows": len(windows), "csim_seconds": csim_seconds,
        "edge_agreement": agreement,
        "emulation_bitexact_windows": int(exact_windows.sum()),
        "emulation_bitexact": bool(exact_windows.all()),
        "max_abs_logit_diff": float(np.abs(csim[mask] - float_logits[mask]).max()),
        "shots": shots, "errors_float": errors_float, "errors_fixed": errors_fixed,
        "ler_float": errors_float / shots, "ler_fixed": errors_fixed / shots,
        "ler_ratio_fixed_vs_float": errors_fixed / errors_float if errors_float else None,
        "shots_with_different_outcome": differing,
    }
