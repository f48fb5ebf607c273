#!/usr/bin/env bash
# One GPU, one ten-minute run: what makes small-CNN adversarial training fast on CUDA, and
# a reduced run of the faithful Table 5.1 protocol and of the plasticity map.
#
#   ROBUSTLAB_DATA=DIR bash benchmarks/gpu.sh [RESULTS_DIR]
#
# 1. benchmarks/gpu_throughput.py: PGD-10 adversarial-training steps/s of the thesis CNNs at
#    batch 128 (baseline) and with larger batches, channels-last, bf16, torch.compile and
#    CUDA graphs, side by side (about 3 minutes).
# 2. configs/thesis-table-5-1.yaml reduced to one seed, ε = 0.3, the first 12 800 training
#    images and 2 + 2 epochs, its PGD-200 training attack unchanged: the faithful protocol's
#    cost per image and epoch, from which a full run (60 000 images, 12 + 20 epochs, three
#    seeds, three readings of ε) can be estimated.
# 3. configs/plasticity-map-quick.yaml (digits) on the GPU: the map's machinery on CUDA.
# Installs nothing: needs robustlab importable and PyTorch with CUDA. Prints a summary and
# writes RESULTS_DIR (default gpu-results/) with the throughput JSON, reports and timings.
set -uo pipefail

results=${1:-gpu-results}
python=${PYTHON:-python3}
runs="$results/runs"
mkdir -p "$results"
export PYTHONUNBUFFERED=1

"$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')" \
    || exit 1
"$python" -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))"

timeout 300 "$python" benchmarks/gpu_throughput.py --seconds 6 --out "$results/gpu-throughput.json"

reduced="$results/thesis-table-5-1-reduced.yaml"
"$python" benchmarks/gpu_reduced_config.py "$reduced"
for config in "$reduced" configs/plasticity-map-quick.yaml; do
    name=$(basename "$config" .yaml)
    start=$(date +%s%N)
    timeout 240 "$python" -m robustlab run "$config" --out "$runs" --device cuda
    status=$?
    end=$(date +%s%N)
    echo "{\"config\": \"$name\", \"exit\": $status, \"wall_s\": $(( (end - start) / 1000000000 ))}" \
        | tee -a "$results/timings.jsonl"
    [ $status -eq 0 ] && "$python" -m robustlab report "$runs/$name" --export "$results/$name" > /dev/null
done
