"""`nqec bench inference`: onnxruntime vs torch on the CPU for a bundle, same inputs, same run."""

from __future__ import annotations

import platform
import time

import numpy as np
import torch

from decoder.bundle import Bundle
from decoder.nets import network_from_bundle
from decoder.predecoder import probability_logit

BATCHES = (1, 64, 1024)


def _time(run, inputs: np.ndarray, batch: int, seconds: float) -> list[float]:
    samples, offset, stop = [], 0, time.perf_counter() + seconds
    run(inputs[:batch])  # warm up
    while len(samples) < 5 or time.perf_counter() < stop:
        chunk = inputs[offset: offset + batch]
        if len(chunk) < batch:
            offset, chunk = 0, inputs[:batch]
        start = time.perf_counter()
        run(chunk)
        samples.append(time.perf_counter() - start)
        offset += batch
    return samples


def bench_inference(name: str, seconds: float = 2.0, parity_shots: int = 100_000, seed: int = 0) -> dict:
    """Shots/s at batch 1, 64, 1024 and batch-1 latency for onnxruntime and torch, plus a parity check."""
    bundle = Bundle.load(name)
    model = network_from_bundle(bundle)
    torch.set_num_threads(torch.get_num_threads())

    def run_torch(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    inputs, rows_per_shot = bundle.stim_inputs(1024 * 4, seed)
    results = {"model": bundle.name, "kind": bundle.kind, "spec": bundle.spec.to_dict(), "seed": seed,
               "machine": f"{platform.node()} ({platform.machine()}), torch threads {torch.get_num_threads()}",
               "rows_per_shot": rows_per_shot, "runtimes": {}}
    for runtime, run in (("onnxruntime", bundle.run), ("torch", run_torch)):
        row = {}
        for batch in BATCHES:
            samples = _time(run, inputs, batch * rows_per_shot, seconds)
            row[f"batch{batch}_shots_per_s"] = batch / float(np.mean(samples))
            if batch == 1:
                row["batch1_p50_ms"], row["batch1_p99_ms"] = (float(v) for v in np.percentile(np.array(samples) * 1e3, [50, 99]))
        results["runtimes"][runtime] = row
    onnx_row, torch_row = results["runtimes"]["onnxruntime"], results["runtimes"]["torch"]
    results["onnx_vs_torch"] = {key: onnx_row[key] / torch_row[key] for key in onnx_row}
    results["parity"] = parity(bundle, run_torch, parity_shots, seed + 1)
    return results


def parity(bundle: Bundle, run_torch, shots: int, seed: int) -> dict:
    """Max |onnx - torch| output and whether the decisions agree on every shot."""
    max_diff, same, done = 0.0, True, 0
    threshold = probability_logit(bundle.manifest["predecoder"]["threshold"]) if bundle.kind == "predecoder" else 0.0
    while done < shots:
        n = min(20_000, shots - done)
        inputs, _ = bundle.stim_inputs(n, seed + done)
        a, b = bundle.run(inputs), run_torch(inputs)
        max_diff = max(max_diff, float(np.abs(a - b).max()))
        same &= bool(np.array_equal(a > threshold, b > threshold))
        done += n
    return {"shots": shots, "max_abs_diff": max_diff, "identical_decisions": same}
