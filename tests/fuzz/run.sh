#!/usr/bin/env bash
# Runs one libFuzzer harness for a given time, at the lowest CPU priority, and prints
# libFuzzer's final statistics and the CPU time the run got. The corpus grows in
# $BUILD/fuzz-corpus/HARNESS (started from the generated seeds), crashes land in
# $BUILD/fuzz-artifacts/HARNESS/, the log in $BUILD/fuzz-logs/. See tests/fuzz/README.md.
# Usage: tests/fuzz/run.sh HARNESS SECONDS [more libFuzzer flags]
#        HARNESS: safetensors | checkpoint | image | metadata_json
#        BUILD=build-fuzz (default): a tree configured with -DENGINE_FUZZ=ON
set -euo pipefail
cd "$(dirname "$0")/../.."
if (($# < 2)); then
  sed -n '2,9p' "$0"
  exit 2
fi
harness=$1 seconds=$2
shift 2
build=${BUILD:-build-fuzz}
case $harness in
  safetensors) max_len=16384 ;;    # headers of a few tensors plus their data
  checkpoint) max_len=32768 ;;     # the seeds hold ~9 KB of tensors and metadata
  image) max_len=16384 ;;          # small images; a 16 KiB PNG may still inflate to 135M pixels
  metadata_json) max_len=4096 ;;   # one JSON string
  *) echo "run.sh: unknown harness '$harness' (safetensors, checkpoint, image, metadata_json)" >&2; exit 2 ;;
esac
binary=$build/tests/fuzz/fuzz_$harness
[[ -x $binary ]] || { echo "run.sh: $binary missing; build it first (tests/fuzz/README.md)" >&2; exit 1; }

corpus=$build/fuzz-corpus/$harness seeds=$build/fuzz-seeds
artifacts=$build/fuzz-artifacts/$harness logs=$build/fuzz-logs
mkdir -p "$corpus" "$artifacts" "$logs"
[[ -d $seeds/$harness ]] || "$build/tests/fuzz/fuzz_make_corpus" "$seeds" >/dev/null
log=$logs/$harness-$(date +%Y%m%d-%H%M%S).log

# Sanitizer reports abort the run (the build uses -fno-sanitize-recover); leaks are findings.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
/usr/bin/time -f "time: wall %e s, user %U s, system %S s, max rss %M KB" \
  nice -n 19 "$binary" "$corpus" "$seeds/$harness" \
  -max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb=2048 -timeout=10 \
  -print_final_stats=1 -artifact_prefix="$artifacts/" "$@" >"$log" 2>&1 || status=$?
grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::|^time:|ERROR|SUMMARY|Test unit written' "$log" || true
echo "log: $log (exit $status); corpus: $(ls "$corpus" | wc -l) files in $corpus"
exit "$status"
