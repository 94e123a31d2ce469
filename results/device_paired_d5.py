"""Does fine-tuning on the device help beyond calibrating the mix? Paired, on the same fresh shots.

python results/device_paired_d5.py CIRCUIT SHOTS SEED OUT.json NAME=BUNDLE...

Decodes SHOTS shots (circuit sampler, SEED) of CIRCUIT with correlated matching and with guided matching
of every bundle (its manifest's guided settings; prior = the circuit's DEM), and gives each pair's ratio of
logical errors with a paired 95% bootstrap interval (results/paired_ratio_ci.py's), first against correlated
matching, then of each bundle against the first."""
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
argv, sys.argv = sys.argv, sys.argv[:1]  # paired_ratio_ci reads its own files from sys.argv when imported
from paired_ratio_ci import ci  # noqa: E402
sys.argv = argv

from decoder.bundle import Bundle  # noqa: E402
from decoder.experiment import CircuitSpec  # noqa: E402
from decoder.matching import MatchingDecoder  # noqa: E402

circuit, shots, seed, out, *models = sys.argv[1:]
shots, seed = int(shots), int(seed)
spec = CircuitSpec.from_file(circuit)
events, observables = spec.circuit().compile_detector_sampler(seed=seed).sample(shots, separate_observables=True)
decoders = {"matching-correlated": MatchingDecoder(spec.dem(), correlations=True)}
for item in models:
    name, path = item.split("=", 1)
    decoders[name] = Bundle.load(path).decoder(spec, pipeline="guided-matching")
wrong, seconds = {}, {}
for name, decoder in decoders.items():
    start = time.perf_counter()
    wrong[name] = np.any(decoder.decode_batch(events) != observables, axis=1)
    seconds[name] = time.perf_counter() - start
    print(name, int(wrong[name].sum()), f"{seconds[name]:.1f} s", flush=True)


def pair(a: str, b: str) -> dict:
    return ci(int(wrong[a].sum()), int(wrong[b].sum()), int((wrong[a] != wrong[b]).sum()), shots)


names = list(decoders)
result = {"command": "python " + " ".join(sys.argv), "circuit": spec.to_dict(), "shots": shots, "seed": seed,
          "errors": {name: int(wrong[name].sum()) for name in names}, "seconds": seconds,
          "models": {item.split("=", 1)[0]: item.split("=", 1)[1] for item in models},
          "vs_correlated": {name: pair(name, names[0]) for name in names[1:]},
          f"vs_{names[1]}": {name: pair(name, names[1]) for name in names[2:]}}
Path(out).write_text(json.dumps(result, indent=1) + "\n")
print(json.dumps({key: result[key] for key in ("errors", "vs_correlated", f"vs_{names[1]}")}, indent=1))
