#!/usr/bin/env bash
# The d x p grid of issue #12: pipelines and both PyMatching modes on the same shots per cell (every
# evaluate call of a cell shares its seed, hence its shots). Cells already written are skipped, so the
# script resumes; JOBS picks the decoder:model pairs. Shots: 10^6 at d=5, 5*10^5 at d=7 and 9 (10^5 at
# d=9 p=0.001, where no feasible count gives 50 errors), fewer at d=11 and 13 where this 2-core VM's
# time runs out. `nqec table results/grid/*.json` prints the table.
set -euo pipefail
cd "$(dirname "$0")/../.."
NQEC=${NQEC:-.venv/bin/nqec}
JOBS=${JOBS:-"guided-matching:predecoder-d5 predecoder+matching:predecoder-fpga"}
cell() {  # d p shots seed
  for job in $JOBS; do
    decoder=${job%%:*} model=${job#*:}
    out="results/grid/${model}-${decoder}-d$1-p$2.json"
    [ -s "$out" ] && continue
    "$NQEC" evaluate --decoder "$decoder" --model "$model" -d "$1" -p "$2" --shots "$3" --seed "$4" --json "$out.part" \
      >/dev/null && mv "$out.part" "$out"
  done
}
cell 5 0.003 1000000 503
cell 5 0.005 1000000 505
cell 5 0.001 1000000 501
cell 11 0.005 200000 1105
cell 13 0.005 100000 1305
cell 11 0.003 200000 1103
cell 13 0.003 100000 1303
cell 7 0.003 500000 703
cell 7 0.005 500000 705
cell 9 0.003 500000 903
cell 9 0.005 500000 905
cell 7 0.001 500000 701
cell 9 0.001 100000 901
cell 11 0.001 50000 1101
cell 13 0.001 20000 1301
