"""Measure `nqec decode --decoder matching` against `pymatching predict` on b8 shot files at d=5 p=0.003.

Writes results/decode-file-d5.json: wall time and peak RSS (``/usr/bin/time -v``) of both commands on
the same 10^6-shot file (runs alternated), whether their answers are identical, and nqec's peak RSS
on a 10^7-shot file. Run: ``nice -n 10 .venv/bin/python results/decode_file_d5.py [scratch-dir]``.
"""

import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import stim

from decoder import CodeSpec
from decoder.shot_files import ShotWriter

SEED, REPEATS, SPEC = 0, 3, CodeSpec(5, 5, 0.003)
BIN = Path(sys.executable).parent


def timed(command: list[str]) -> dict:
    """Wall seconds and peak RSS (MB) of one run of ``command`` under /usr/bin/time -v."""
    run = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True, check=True)
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", run.stderr).groups()
    seconds = int(wall[0] or 0) * 3600 + int(wall[1]) * 60 + float(wall[2])
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", run.stderr).group(1)) / 1024
    return {"wall_s": seconds, "peak_rss_mb": rss}


def main() -> None:
    scratch = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="nqec-decode-file-"))
    dem = scratch / "d5.dem"
    SPEC.dem().to_file(dem)
    sampler = SPEC.circuit().compile_detector_sampler(seed=SEED)
    files = {}
    for shots in (10**6, 10**7):  # the 10^7 file continues the same sampler after the 10^6 one
        files[shots] = scratch / f"dets-{shots}.b8"
        with ShotWriter(files[shots], "b8", SPEC.circuit().num_detectors) as writer:
            for _ in range(shots // 10**6):
                writer.write(sampler.sample(10**6, bit_packed=True))
    ours = lambda shots, out: [str(BIN / "nqec"), "decode", "--dem", str(dem), "--in", str(files[shots]),
                               "--out", str(out), "--decoder", "matching"]
    theirs = lambda shots, out: [str(BIN / "pymatching"), "predict", "--dem", str(dem), "--in", str(files[shots]),
                                 "--in_format", "b8", "--out", str(out), "--out_format", "01"]
    runs = {"nqec": [], "pymatching": []}
    for _ in range(REPEATS):
        runs["nqec"].append(timed(ours(10**6, scratch / "nqec.01")))
        runs["pymatching"].append(timed(theirs(10**6, scratch / "pymatching.01")))
    same = (scratch / "nqec.01").read_bytes() == (scratch / "pymatching.01").read_bytes()
    big = {"nqec": timed(ours(10**7, scratch / "nqec-1e7.01")),
           "pymatching": timed(theirs(10**7, scratch / "pymatching-1e7.01"))}
    same_big = (scratch / "nqec-1e7.01").read_bytes() == (scratch / "pymatching-1e7.01").read_bytes()
    best = {name: min(r["wall_s"] for r in rs) for name, rs in runs.items()}
    result = {
        "spec": SPEC.to_dict(), "seed": SEED, "shots": 10**6, "repeats": REPEATS,
        "commands": {"nqec": " ".join(ours(10**6, "nqec.01")).replace(str(scratch) + "/", ""),
                     "pymatching": " ".join(theirs(10**6, "pymatching.01")).replace(str(scratch) + "/", ""),
                     "this": "nice -n 10 .venv/bin/python results/decode_file_d5.py"},
        "runs_1e6": runs, "identical_answers_1e6": same, "identical_answers_1e7": same_big,
        "best_wall_s_1e6": best, "time_ratio_nqec_over_pymatching": best["nqec"] / best["pymatching"],
        "runs_1e7": big,
        "nqec_peak_rss_mb": {"1e6": min(r["peak_rss_mb"] for r in runs["nqec"]), "1e7": big["nqec"]["peak_rss_mb"]},
        "pymatching_peak_rss_mb": {"1e6": min(r["peak_rss_mb"] for r in runs["pymatching"]),
                                   "1e7": big["pymatching"]["peak_rss_mb"]},
        "machine": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cores, shared with other work)",
        "stim": stim.__version__,
    }
    out = Path(__file__).with_name("decode-file-d5.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("identical_answers_1e6", "identical_answers_1e7", "best_wall_s_1e6",
                                             "time_ratio_nqec_over_pymatching", "nqec_peak_rss_mb",
                                             "pymatching_peak_rss_mb")}, indent=1))


if __name__ == "__main__":
    main()
