#!/usr/bin/env bash
# The Table 5.1 CPU-protocol configs, run unchanged on one CUDA GPU (`device: auto` picks it):
# an end-to-end check that the engine, the trainer, calibration and every attack in them run
# on CUDA, and the figures docs/reproduction.md quotes for the GPU column.
#
#   [JOBS=N] bash benchmarks/gpu_reproduction.sh RESULTS_DIR [CONFIG_NAME ...]
#
# Writes RESULTS_DIR/<config>/ (the exported report: report.md, report.csv, figures/) and
# RESULTS_DIR/timings.json (wall seconds per config, the GPU's name, torch's version).
# Needs robustlab importable and ROBUSTLAB_DATA set; installs nothing. Each config keeps
# running when one before it fails, so one bug costs one config, not the whole GPU lease.
set -uo pipefail

results=${1:?usage: gpu_reproduction.sh RESULTS_DIR [CONFIG_NAME ...]}
shift
configs=("$@")
if [ ${#configs[@]} -eq 0 ]; then
    configs=(thesis-table-5-1-cpu thesis-table-5-1-cpu-8-255 thesis-table-5-1-cpu-0.3
             thesis-table-5-1-fashion-cpu)
fi
python=${PYTHON:-python3}
runs=${RUNS:-runs-gpu}
jobs=(${JOBS:+--jobs "$JOBS"})   # JOBS=N: trials side by side (not part of an experiment's identity)
mkdir -p "$results"
export PYTHONUNBUFFERED=1

"$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')" \
    || exit 1

timings="$results/timings.jsonl"
: > "$timings"
for name in "${configs[@]}"; do
    start=$(date +%s%N)
    "$python" -m robustlab run "configs/$name.yaml" --out "$runs" "${jobs[@]}"
    status=$?
    end=$(date +%s%N)
    if [ $status -eq 0 ]; then
        "$python" -m robustlab report "$runs/$name" --export "$results/$name" > /dev/null
    fi
    printf '{"config": "%s", "exit": %d, "wall_ms": %d}\n' \
        "$name" "$status" $(( (end - start) / 1000000 )) >> "$timings"
done

"$python" - "$results" <<'PY'
import json, pathlib, sys
import torch

results = pathlib.Path(sys.argv[1])
rows = [json.loads(line) for line in (results / "timings.jsonl").read_text().splitlines()]
for row in rows:
    row["wall_s"] = round(row.pop("wall_ms") / 1000, 1)
record = {
    "gpu": torch.cuda.get_device_name(0),
    "torch": torch.__version__,
    "configs": rows,
}
(results / "timings.json").write_text(json.dumps(record, indent=2) + "\n")
(results / "timings.jsonl").unlink()
print(json.dumps(record, indent=2))
PY
