#!/usr/bin/env bash
# Regenerate reports/synth/ under the fair protocol (README "A fair comparison protocol"):
#   1. tune every built-in strategy with the same budget on the validation split (avbench tune: the
#      same number of TPE trials, the same sampler seed, the same per-trial step budget; the test
#      split is never read),
#   2. train each tuned configuration on the whole training split with 3 seeds and test it,
#   3. the UAVM S_dim and N_s sweeps (Fig. 2 shape) at the tuned UAVM configuration,
#   4. the representation analyses (Figs. 3-5), robustness and event types, then the report
#      (report.md + figures/ + self-contained report.html).
#
# Sized for about an hour on a quiet 2-core CPU with JOBS=2 (one thread per job); see README "Reports"
# for how that was estimated. 960 training clips (96 of them held out for validation while tuning),
# 480 test clips, the card's widths (embed_dim 128), batch 48 (18 steps per epoch on the 864 tuning
# clips). Deterministic up to the timing columns (and the two plots drawn from them), given JOBS. The
# script resumes: a strategy with a stored tuned configuration is not tuned again, finished seeds and
# recorded analyses are skipped; delete $RESULTS to start from scratch.
#
#   reports/make_synth_report.sh                      # results in results/synth-report
#   RESULTS=/tmp/r OUT=/tmp/report JOBS=2 BUDGET=16 MAX_STEPS=540 reports/make_synth_report.sh
set -euo pipefail
cd "$(dirname "$0")/.."

AVBENCH="${AVBENCH:-avbench}"
PYTHON="${PYTHON:-python}"
RESULTS="${RESULTS:-results/synth-report}"
OUT="${OUT:-reports/synth}"
SEEDS="${SEEDS:-0,1,2}"
JOBS="${JOBS:-2}"              # processes at once (tuning, final runs, sweep points)
BUDGET="${BUDGET:-16}"         # tuning trials per strategy (Optuna's TPE starts after 10 random ones)
MAX_STEPS="${MAX_STEPS:-540}"  # per-trial step budget: 30 epochs of the tuning rows
STRATEGIES="${STRATEGIES:-uavm independent cross_attention event_layers late_fusion naive_av sum film gated mbt vq_codes}"
# One thread per process: on a small shared CPU, two threads fighting other processes are far slower.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export AVBENCH RESULTS SEEDS BUDGET MAX_STEPS PYTHON

DATA=(--dataset synth --set "data.train_clips=${TRAIN_CLIPS:-960}" --set "data.test_clips=${TEST_CLIPS:-480}")
export DATA_FLAGS="${DATA[*]}"

# 1. Tuning: one process per strategy, JOBS at a time. Every strategy gets the same flags; the step
#    budget is given explicitly so it is identical whichever strategy's recipe would set it.
tune_one() {
  local s="$1"
  if ls "$RESULTS"/tuned/synth-*/"$s".json >/dev/null 2>&1; then echo "tuned already: $s"; return 0; fi
  # shellcheck disable=SC2086
  "$AVBENCH" tune --strategy "$s" $DATA_FLAGS --budget "$BUDGET" --max-steps "$MAX_STEPS" \
    --results-dir "$RESULTS" --no-progress -q || echo "tuning failed: $s (listed in the report's missing pieces)"
}
# 2. Final runs: the tuned configuration on the whole training split, 3 seeds, tested.
final_one() {
  local s="$1"
  # shellcheck disable=SC2086
  "$AVBENCH" run --strategy "$s" $DATA_FLAGS --tuned --seeds "$SEEDS" --results-dir "$RESULTS" \
    --set train.validation=train-on-all --set train.eval_every_epoch=false --no-progress --skip-finished \
    || echo "final runs failed: $s"
}
export -f tune_one final_one
printf '%s\n' $STRATEGIES | xargs -P "$JOBS" -I{} bash -c 'tune_one {}'
printf '%s\n' $STRATEGIES | xargs -P "$JOBS" -I{} bash -c 'final_one {}'

# 3. UAVM Fig. 2 at CPU widths, at the tuned UAVM configuration: shared width S_dim, and N_s shared
#    layers with N + N_s = 6. A failed point is listed at the end of its command and in the report.
mapfile -t UAVM_SETS < <("$PYTHON" - "$RESULTS" <<'EOF'
import glob, json, sys
(path,) = glob.glob(f"{sys.argv[1]}/tuned/synth-*/uavm.json") or [None]
if path:
    for k, v in json.load(open(path))["overrides"].items():
        if not k.startswith("data."):
            print(f"--set\n{k}={v}")
EOF
)
#    The sweep's executor divides the cores between its JOBS itself (one thread each), so the one-
#    thread limit above is lifted for it.
SWEEP=("${DATA[@]}" --seeds "$SEEDS" --results-dir "$RESULTS" --no-progress --jobs "$JOBS" --threads-per-job 1
       ${UAVM_SETS[@]+"${UAVM_SETS[@]}"} --set train.validation=train-on-all --set train.eval_every_epoch=false)
env -u OMP_NUM_THREADS "$AVBENCH" sweep --strategy uavm --name s_dim --grid "s_dim=16,32,64,128" "${SWEEP[@]}" || true
env -u OMP_NUM_THREADS "$AVBENCH" sweep --strategy uavm --name n_shared --grid "n_shared=0,3,6" --tie "n_specific=6-n_shared" \
  "${SWEEP[@]}" || true

# 4. Analyses: probe, retrieval, attention difference and event types on every seed (sweep points
#    too, for the analyses-against-S_dim/N_s plots); t-SNE and robustness on seed 0 of the main rows,
#    with effective robustness against late_fusion seed 0. Tuning runs are never analysed or tabled.
A=(--dataset synth --results-dir "$RESULTS" --skip-done --no-plots)
"$AVBENCH" analyze "${A[@]}" --what probe,retrieval,attention,event-types || true
"$AVBENCH" analyze "${A[@]}" --what tsne,robustness --seeds 0 --sweep-points exclude || true

"$AVBENCH" report --dataset synth --out "$OUT" --results-dir "$RESULTS"
