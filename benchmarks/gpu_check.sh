#!/usr/bin/env bash
# GPU readiness check: everything a lent accelerator should measure, in ONE call of at most ~8 minutes.
#
#   benchmarks/gpu_check.sh --device cuda          # on the GPU machine (issue 28)
#   benchmarks/gpu_check.sh --device cpu --tiny    # the same code paths in about a minute, on any CPU
#
# Steps (each time-boxed with `timeout`, so one that hangs or fails does not eat the budget; the script
# always continues and always exits 0 once $OUT/summary.json is written):
#   env            nvidia-smi, torch / CUDA / cuDNN versions, CPU, git commit
#   uavm           paper-size UAVM, train + infer, fast path and --reference interleaved (compile off)
#   uavm_compile   the same with --compile (torch.compile's gain = this vs uavm)
#   cross_attention, mbt   paper-size train + infer
#   vq_codes, vq_codes_infer         paper-size train (auto precision), infer (fp32; see below)
#   epoch          one epoch over a VGGSound-size synthetic cache (184k clips, 22 GB fp16) with the data
#                  path (memmap gather + recipe augmentations), written at disk speed first
# Output in $OUT (default ./gpu_check_out): <step>.json (avbench bench --output-json), <step>.log,
# env.txt, steps.tsv (step, exit code, seconds, limit) and summary.json (the steps and their headline
# figures). Exit codes in steps.tsv: 0 ok, 124 timed out, anything else failed (see <step>.log).
#
# Options: --device D (cuda, cuda:N, cpu; default cuda), --tiny (small shapes: a test of the script),
# --budget S (seconds for all steps; default 450 with cuda, 1500 with --tiny: a bound, not the expected
# time, which is about a minute on 2 quiet cores), --only a,b (these steps).
# Environment: OUT, AVBENCH (the command; default `avbench`, else `python -m avbench`), PYTHON.
set -u

DEVICE=cuda
TINY=0
BUDGET=""
ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --device=*) DEVICE="${1#*=}"; shift ;;
    --tiny) TINY=1; shift ;;
    --budget) BUDGET="$2"; shift 2 ;;
    --only) ONLY="$2"; shift 2 ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

OUT="${OUT:-./gpu_check_out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
PYTHON="${PYTHON:-python}"
if [ -z "${AVBENCH:-}" ]; then
  if command -v avbench >/dev/null 2>&1; then AVBENCH="avbench"; else AVBENCH="$PYTHON -m avbench"; fi
fi
if [ -z "$BUDGET" ]; then
  if [ "$TINY" = 1 ]; then BUDGET=1500; else BUDGET=450; fi
fi
export MLFLOW_DISABLE_TELEMETRY=true MLFLOW_ENABLE_ASYNC_LOGGING=false PYTHONUNBUFFERED=1
# torch.compile's cache in a directory of this run: the shared /tmp/torchinductor_$USER may hold a half-written
# artifact of an interrupted compile ("file too short"), which fails the compile step.
if [ -z "${TORCHINDUCTOR_CACHE_DIR:-}" ]; then
  TORCHINDUCTOR_CACHE_DIR="$(mktemp -d -t gpu_check_inductor.XXXXXX)"
  export TORCHINDUCTOR_CACHE_DIR
  trap 'rm -rf "$TORCHINDUCTOR_CACHE_DIR"' EXIT
fi

START=$(date +%s)
DEADLINE=$((START + BUDGET))
printf 'step\trc\tseconds\tlimit\n' > "$OUT/steps.tsv"

want() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }

# step NAME LIMIT_S CMD...: run CMD with at most LIMIT_S seconds (less if the budget is nearly spent).
step() {
  local name="$1" limit="$2"; shift 2
  want "$name" || return 0
  local now left t0 rc
  now=$(date +%s); left=$((DEADLINE - now))
  if [ "$left" -lt 10 ]; then
    printf '%s\tskipped\t0\t%s\n' "$name" "$limit" >> "$OUT/steps.tsv"
    echo "[gpu_check] $name: skipped (budget spent)"
    return 0
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "[gpu_check] $name (at most ${limit}s): $*"
  t0=$(date +%s)
  timeout -k 10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" "$limit" >> "$OUT/steps.tsv"
  echo "[gpu_check] $name: rc $rc in $(( $(date +%s) - t0 ))s"
  tail -n 3 "$OUT/$name.log" | sed 's/^/    /'
}

env_report() {
  {
    echo "date: $(date -u +%FT%TZ)"
    echo "host: $(hostname)"
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown) $(git status --porcelain 2>/dev/null | wc -l) changed file(s)"
    echo "cpu: $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1), $(nproc) core(s)," \
         "$(grep -o -w -E 'avx512_bf16|amx_bf16' /proc/cpuinfo 2>/dev/null | sort -u | tr '\n' ' ')"
    echo "--- nvidia-smi"
    nvidia-smi 2>&1 || echo "(no nvidia-smi)"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv 2>&1 || true
    echo "--- python"
    $PYTHON - <<'EOF'
import json, platform
import torch
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(),
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}
try:
    import avbench, avbench_strategies  # noqa: F401
    info["avbench"] = avbench.__version__ if hasattr(avbench, "__version__") else "importable"
except Exception as e:  # noqa: BLE001
    info["avbench"] = f"not importable: {e}"
print(json.dumps(info, indent=1))
EOF
  } > "$OUT/env.txt" 2>&1
  cat "$OUT/env.txt"
}

# avbench must be importable with its strategies (entry points); offline, an editable install is enough.
if ! $PYTHON -c "import avbench, avbench_strategies" >/dev/null 2>&1; then
  echo "[gpu_check] avbench is not installed: pip install --no-deps --no-build-isolation -e ." \
    | tee "$OUT/install.log"
  timeout 120 $PYTHON -m pip install --no-deps --no-build-isolation -e . >> "$OUT/install.log" 2>&1 || true
fi

want env && { t0=$(date +%s); env_report > /dev/null; printf 'env\t0\t%s\t-\n' "$(( $(date +%s) - t0 ))" >> "$OUT/steps.tsv"; }

# Shapes and lengths. Paper size: VGGSound features (T 30, 1024-d, 309 classes), each strategy's default
# (paper) width, the recipe's batch; --tiny: the same flags on small shapes and few steps.
COMMON=(--synthetic --device "$DEVICE" --progress never)
if [ "$TINY" = 1 ]; then
  DATA=(--set data.steps=8 --set data.audio_dim=32 --set data.video_dim=32 --set data.classes=10)
  TIMING=(--batch-size 16 --warmup 1 --steps 2 --peak-sizes 128 --peak-seconds 0.05)
  UAVM_SIZE=(--set embed_dim=32 --set num_heads=2)
  MBT_SIZE=(--set embed_dim=32 --set depth=2 --set fusion_layer=1 --set num_heads=2)
  VQ_SIZE=(--set embed_dim=32)
  EPOCH_CLIPS=1840
  # ~10 s of CPU each on 2 quiet cores; generous limits: a shared test machine may be 5x slower.
  L_MODEL=240; L_UAVM=240; L_COMPILE=480; L_EPOCH=240
else
  DATA=()
  TIMING=()
  UAVM_SIZE=(); MBT_SIZE=(); VQ_SIZE=()
  EPOCH_CLIPS=184000
  # Sum of the limits (env ~15 + 70 + 150 + 100 + 4 x 45 = 515 s) exceeds the budget on purpose: the steps
  # run in priority order and the last ones get what is left (a step needs 10 s to start).
  L_MODEL=45; L_UAVM=70; L_COMPILE=100; L_EPOCH=150
fi

B=($AVBENCH bench)
step uavm "$L_UAVM" "${B[@]}" --strategy uavm "${COMMON[@]}" "${DATA[@]}" "${TIMING[@]}" "${UAVM_SIZE[@]}" \
  --mode both --reference --output-json "$OUT/uavm.json"
step epoch "$L_EPOCH" "${B[@]}" --strategy uavm "${COMMON[@]}" "${DATA[@]}" "${TIMING[@]}" "${UAVM_SIZE[@]}" \
  --mode train --full-epoch --set "data.clips=$EPOCH_CLIPS" --output-json "$OUT/epoch.json"
# Compile third: torch.compile's gain is one of the GPU issue's targets; the other strategies follow.
step uavm_compile "$L_COMPILE" "${B[@]}" --strategy uavm "${COMMON[@]}" "${DATA[@]}" "${TIMING[@]}" "${UAVM_SIZE[@]}" \
  --mode both --compile --output-json "$OUT/uavm_compile.json"
step cross_attention "$L_MODEL" "${B[@]}" --strategy cross_attention "${COMMON[@]}" "${DATA[@]}" "${TIMING[@]}" \
  "${UAVM_SIZE[@]}" --mode both --output-json "$OUT/cross_attention.json"
step mbt "$L_MODEL" "${B[@]}" --strategy mbt "${COMMON[@]}" "${DATA[@]}" "${TIMING[@]}" "${MBT_SIZE[@]}" \
  --mode both --output-json "$OUT/mbt.json"
# vq_codes: train at the auto precision; inference in fp32, because its bf16 inference fails under bench's
# FLOP counter (nn.TransformerEncoderLayer's fused inference path under autocast, seen on CPU: "expected m1
# and m2 to have the same dtype"), and a failing infer would lose the train figures of a --mode both call.
step vq_codes "$L_MODEL" "${B[@]}" --strategy vq_codes "${COMMON[@]}" "${DATA[@]}" "${TIMING[@]}" "${VQ_SIZE[@]}" \
  --mode train --output-json "$OUT/vq_codes.json"
step vq_codes_infer "$L_MODEL" "${B[@]}" --strategy vq_codes "${COMMON[@]}" "${DATA[@]}" "${TIMING[@]}" \
  "${VQ_SIZE[@]}" --mode infer --precision fp32 --output-json "$OUT/vq_codes_infer.json"

# summary.json: every step's exit code and seconds, and the headline figures of the JSON it wrote.
$PYTHON - "$OUT" "$DEVICE" "$TINY" "$BUDGET" "$(( $(date +%s) - START ))" <<'EOF' || echo "[gpu_check] summary failed"
import csv, json, sys
from pathlib import Path

out, device, tiny, budget, wall = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "1", int(sys.argv[4]), int(sys.argv[5])


def pick(d, *path):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


steps = []
for row in csv.DictReader(open(out / "steps.tsv"), delimiter="\t"):
    name = row["step"]
    rec = {"step": name, "rc": row["rc"], "seconds": int(row["seconds"])}
    f = out / f"{name}.json"
    if f.exists():
        try:
            d = json.loads(f.read_text())
        except ValueError:
            d = {}
        for mode in ("train", "reference", "infer"):
            for key in ("items_per_s", "clips_per_s", "mfu", "achieved_flops_per_s", "step_ms", "peak_memory_bytes"):
                v = pick(d, mode, key)
                if v is not None:
                    rec[f"{mode}.{key}"] = v
        for key in ("seconds", "clips", "clips_per_s"):
            v = pick(d, "data", "epoch", key)
            if v is not None:
                rec[f"epoch.{key}"] = v
        for key in ("cache_clips_per_s", "gather_augment_ms", "overhead_pct"):
            v = pick(d, "data", key)
            if v is not None:
                rec[f"data.{key}"] = v
        if "matmul_flops_per_s" in d:
            rec["matmul_flops_per_s"] = d["matmul_flops_per_s"]
    steps.append(rec)
summary = {"device": device, "tiny": tiny, "budget_s": budget, "wall_s": wall, "steps": steps}
(out / "summary.json").write_text(json.dumps(summary, indent=1))
for s in steps:
    print(" ".join(f"{k}={v}" for k, v in s.items() if not isinstance(v, dict)))
EOF
echo "[gpu_check] done in $(( $(date +%s) - START ))s; results in $OUT"
exit 0
