#!/usr/bin/env bash
# The whole GPU job in one command, run from the repository root on the lent GPU machine:
#
#   bash benchmarks/gpu_run.sh "$OUT"            # the GPU run: give it timeout_s=570 (budget below: ~525 s)
#   bash benchmarks/gpu_run.sh --smoke OUTDIR    # CPU, tiny sizes, no build: tests this script (tests/test_gpu_run.py)
#
# Writes only under OUT: build.log, cuda_tests.log, gpu_e2e.json, quality.json + quality.md, train_<case>.log and
# <case>.safetensors (GPU-trained models, small U-Net, fp32 <= 13 MiB), run.json (what ran, how long, exit codes).
# Every part is time-boxed with `timeout`; a part that fails or runs out of time is recorded and the next one
# runs. Training runs the three cases concurrently (one GPU, three processes), each stopped by its time box;
# its newest complete checkpoint is the model. Nothing is resumed across calls on purpose: a retry is a fresh run.
set -uo pipefail
SMOKE=0
if [ "${1:-}" = "--smoke" ]; then SMOKE=1; shift; fi
OUT="${1:?usage: gpu_run.sh [--smoke] OUT}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
cd "$(dirname "$0")/.."
start=$(date +%s)
PY=${PYTHON:-python}
declare -A RC SECS

part() {  # part NAME SECONDS CMD...: run CMD with a time box, log it, record its exit code and seconds
    local name=$1 box=$2; shift 2
    local t0=$(date +%s)
    echo "== $name (time box ${box} s)" | tee -a "$OUT/run.log"
    timeout -s INT --kill-after=15 "$box" "$@" >>"$OUT/$name.log" 2>&1
    RC[$name]=$?
    SECS[$name]=$(( $(date +%s) - t0 ))
    echo "   $name: exit ${RC[$name]} in ${SECS[$name]} s" | tee -a "$OUT/run.log"
}

if [ $SMOKE = 1 ]; then
    unset M3D_REQUIRE_EXT  # the smoke run checks this script; run from the source tree it may lack the build
    DEV=cpu; E2E=(--smoke --device cpu --parts env speed fused); TESTS=(tests/test_schedule.py -k "predictor or q_sample"); BOX_T=180
    TRAIN=(--preset tiny --steps 4 --batch 2 --save-every 2 --log-every 1 --image-size 16); TRAIN_BOX=120
    QUAL=(--size 16 --count 1 --settings preview+s3+vf --crops 4 --floor-repeats 2); BOX_E2E=120; BOX_Q=200
else
    DEV=cuda; E2E=(--parts env fused speed throughput maxsize --probe-cap 20); TESTS=(tests -k "cuda or fused or lineal or fast or metrics"); BOX_T=60
    # the quality issue's recipe at GPU scale: small U-Net, zero-SNR schedule + v-prediction, volume-fraction control
    TRAIN=(--preset small --steps 100000 --save-every 500 --log-every 100); TRAIN_BOX=240
    QUAL=(--size 64 --count 10 --settings fast+vf); BOX_E2E=120; BOX_Q=90
    part build 90 $PY -m pip install --no-build-isolation --no-deps -e .
    export M3D_REQUIRE_EXT=1
fi
part cuda_tests "$BOX_T" $PY -m pytest -q -p no:cacheprovider "${TESTS[@]}"
part gpu_e2e "$BOX_E2E" $PY benchmarks/gpu_e2e.py --out "$OUT/gpu_e2e.json" "${E2E[@]}"

# the three shipped cases, concurrently; data made here (synthetic) or read from ../shared (carbonate)
$PY benchmarks/reproduce_paper.py --stages data --cases spheres,polycrystal --root "$OUT/work" >>"$OUT/data.log" 2>&1
declare -A DATA=([spheres]="$OUT/work/data/spheres.npy --axis all"
                 [polycrystal]="$OUT/work/data/polycrystal.npy --axis 0"
                 [carbonate]="../shared/data/li2018/carbonate_resized.npy --axis 0")
declare -A SIZE=([spheres]=48 [polycrystal]=32 [carbonate]=48)
t0=$(date +%s)
for case in spheres polycrystal carbonate; do
    # shellcheck disable=SC2086
    timeout -s INT --kill-after=15 "$TRAIN_BOX" $PY -c "from micro3diff.cli import main; main()" train ${DATA[$case]} \
        --image-size "${SIZE[$case]}" -o "$OUT/work/$case" --device "$DEV" --no-progress "${TRAIN[@]}" >"$OUT/train_$case.log" 2>&1 &
done
wait
SECS[train]=$(( $(date +%s) - t0 ))
MADE=()  # the cases with a model (no carbonate without ../shared/data next to the checkout)
for case in spheres polycrystal carbonate; do
    [ -f "$OUT/work/$case/model.safetensors" ] || continue
    MADE+=("$case")
    cp "$OUT/work/$case/model.safetensors" "$OUT/$case.safetensors"
    # the box stops training before its last step, so the x0-hat moments of the vf control are measured here
    # shellcheck disable=SC2086
    $PY -c "from micro3diff.cli import main; main()" calibrate "$OUT/$case.safetensors" ${DATA[$case]} \
        >>"$OUT/train_$case.log" 2>&1 &
done
wait
part quality "$BOX_Q" $PY benchmarks/quality_report.py --cases "$(IFS=,; echo "${MADE[*]}")" --models "$OUT/{case}.safetensors" --device "$DEV" \
    --results "$OUT" --root "$OUT/work" --note "GPU-trained (benchmarks/gpu_run.sh)" "${QUAL[@]}"
rm -rf "$OUT/work"

{
    echo "{\"command\": \"bash benchmarks/gpu_run.sh $([ $SMOKE = 1 ] && echo '--smoke ')OUT\", \"smoke\": $SMOKE,"
    echo " \"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\", \"seconds\": $(( $(date +%s) - start )), \"train_seconds\": ${SECS[train]},"
    echo " \"parts\": {"
    first=1
    for k in "${!RC[@]}"; do
        [ $first = 1 ] || echo ","
        first=0
        printf '  "%s": {"exit": %s, "seconds": %s}' "$k" "${RC[$k]}" "${SECS[$k]}"
    done
    echo "}}"
} >"$OUT/run.json"
echo "gpu_run done in $(( $(date +%s) - start )) s; results in $OUT"
