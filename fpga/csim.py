"""`nqec fpga csim`: hls4ml C simulation vs the float model, and LER of fixed vs float pipelines."""

from __future__ import annotations

import math
import time

import numpy as np

from decoder.evaluation import decode_same_shots, ratio
from fpga.convert import FpgaDesign, stim_windows


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
    pipeline = bundle.decoder()
    mask = np.tile(pipeline.geometry.logit_mask, (math.ceil(len(windows) / rounds), 1, 1, 1))[: len(windows)]
    threshold = pipeline.logit_threshold
    agreement = float(np.mean((csim[mask] > threshold) == (float_logits[mask] > threshold)))
    exact_windows = np.all((csim == emulated).reshape(len(windows), -1), axis=1)

    records = decode_same_shots(bundle.spec, {"float": pipeline, "fixed": bundle.decoder(runner=design.emulate)},
                                shots, seed + 1)
    fixed, float_ = records["fixed"], records["float"]
    return {
        "model": bundle.name, "spec": bundle.spec.to_dict(), "seed": seed, "settings": design.settings,
        "csim_windows": len(windows), "csim_seconds": csim_seconds,
        "edge_agreement": agreement,
        "emulation_bitexact_windows": int(exact_windows.sum()),
        "emulation_bitexact": bool(exact_windows.all()),
        "max_abs_logit_diff": float(np.abs(csim[mask] - float_logits[mask]).max()),
        "shots": shots, "errors_float": float_.errors, "errors_fixed": fixed.errors,
        "ler_float": float_.ler, "ler_fixed": fixed.ler, "ler_ratio_fixed_vs_float": ratio(fixed, float_),
        "shots_with_different_outcome": fixed.disagreements,
    }
