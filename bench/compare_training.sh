#!/usr/bin/env bash
# Trains each detector with `trainer` and the same recipe in PyTorch (bench/torch_train.py)
# on one image folder, alternating the two per detector, and prints a markdown table of
# accuracy, per-class recall, ROC AUC, ECE and training images/s (median over epochs).
# Usage: bash bench/compare_training.sh DATA OUT [EPOCHS] [IMAGE_SIZE] [MODELS...]
#   e.g. bash bench/compare_training.sh ../shared/data/cifake runs/cifake 3 32
#   SEED=n (default 0) seeds both sides.
# Needs build/trainer (tools/build.sh) and /usr/bin/python3 with torch and torchvision.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:?usage: compare_training.sh DATA OUT [EPOCHS] [IMAGE_SIZE] [MODELS...]}
out=${2:?usage: compare_training.sh DATA OUT [EPOCHS] [IMAGE_SIZE] [MODELS...]}
epochs=${3:-10}
size=${4:-224}
shift $(( $# < 4 ? $# : 4 ))
models=("$@")
((${#models[@]})) || models=(resnet50 resnet50_bnn resnet50_attn_bnn)
threads=$(nproc)
seed=${SEED:-0}
mkdir -p "$out"
{
  echo "date: $(date -u +%FT%TZ)"; echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"; echo "seed: $seed"
} >"$out/environment.txt"
for m in "${models[@]}"; do
  echo "== $m: ours (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  rm -rf "$out/ours_$m"
  build/trainer --data "$data" --model "$m" --epochs "$epochs" --image-size "$size" --threads "$threads" --seed "$seed" \
    --out "$out/ours_$m" 2>"$out/ours_$m.log" || { tail -5 "$out/ours_$m.log"; exit 1; }
  echo "== $m: pytorch (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  /usr/bin/python3 bench/torch_train.py --data "$data" --model "$m" --epochs "$epochs" --image-size "$size" \
    --threads "$threads" --seed "$seed" --out "$out/torch_$m.json" 2>"$out/torch_$m.log" || { tail -5 "$out/torch_$m.log"; exit 1; }
done
/usr/bin/python3 - "$out" "${models[@]}" <<'PY'
import json, statistics, sys
out, models = sys.argv[1], sys.argv[2:]
print("| detector | engine | accuracy | recall real | recall AI | ROC AUC | ECE | train img/s (median of epochs) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for m in models:
    r = json.load(open(f"{out}/ours_{m}/results.json"))["evaluation"]["pooled"]
    cr = r["classification_report"]
    speeds = [json.loads(l)["images_per_second"] for l in open(f"{out}/ours_{m}/metrics.jsonl")]
    ours = statistics.median(speeds)
    t = json.load(open(f"{out}/torch_{m}.json"))
    e = t["evaluation"]
    theirs = t["median_train_images_per_second"]
    print(f"| {m} | ours | {r['accuracy']:.4f} | {cr['nature']['recall']:.4f} | {cr['ai']['recall']:.4f} | "
          f"{r['roc_auc']:.4f} | {r['ece']:.4f} | {ours:.1f} ({ours / theirs:.2f}x) |")
    print(f"| {m} | PyTorch {t['framework'].split()[-1]} | {e['accuracy']:.4f} | {e['recall_real']:.4f} | "
          f"{e['recall_ai']:.4f} | {e['roc_auc']:.4f} | {e['ece']:.4f} | {theirs:.1f} |")
PY
