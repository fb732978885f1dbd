#!/usr/bin/env bash
# One-command GPU check of llmrec's RL / vLLM stage (target: under 8 minutes on one H100).
#
#   bash scripts/gpu_check.sh            # from the repository root (or anywhere: it cd's there)
#
# On a small offline setup (synthetic shop, random collision-free SIDs, a Qwen3-architecture model of
# 4 layers x 256 built from a config; nothing is downloaded) it
#   1. checks its prerequisites (GPU, CUDA torch, vllm, deepspeed, trl, peft, ...) and fails clearly;
#   2. SFTs the small model briefly (full, bf16) so that its rankings mean something;
#   3. decodes the same validation users with the vLLM and the transformers backends (trie-constrained beam
#      search, 50 beams) and reports the overlap of the top-10 lists (with hf bf16 vs fp32 as the noise floor)
#      and users/s of both; then the same throughput on a random model of Qwen2.5-0.5B's shape if time allows;
#   4. runs a few bf16 LoRA SFT steps and a few bf16 LoRA GRPO steps under DeepSpeed ZeRO-2
#      (accelerate launch, 1 process);
#   5. prints one table (also in $WORK/table.md). Exit status 0 only if every check passed.
#
# Environment: PYTHON (default python3), WORK (default /tmp/llmrec-gpu-check; reused: delete it for a fresh run),
# BUDGET_S (default 420: the 0.5B-shape throughput step is skipped once the run is past it).
# Status: written and shellcheck-clean, but NOT yet run on a GPU (the session that wrote it had none).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
PY="${PYTHON:-python3}"
WORK="${WORK:-/tmp/llmrec-gpu-check}"
BUDGET_S="${BUDGET_S:-420}"
START=$(date +%s)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export VLLM_LOGGING_LEVEL="${VLLM_LOGGING_LEVEL:-WARNING}"

die() { echo "gpu_check: $*" >&2; exit 1; }

mkdir -p "$WORK" || die "cannot create WORK=$WORK"
TIMINGS="$WORK/timings.tsv"
: > "$TIMINGS"

# run NAME CMD...: run a step, log to $WORK/NAME.log, record seconds and exit status; never aborts the script
run() {
  local name=$1 t0 rc
  shift
  echo "== $name: $*"
  t0=$(date +%s)
  set +e
  "$@" > "$WORK/$name.log" 2>&1
  rc=$?
  set -e
  printf '%s\t%s\t%s\n' "$name" "$(( $(date +%s) - t0 ))" "$rc" >> "$TIMINGS"
  if [ "$rc" -ne 0 ]; then
    echo "   FAILED (exit $rc); last lines of $WORK/$name.log:"
    tail -n 25 "$WORK/$name.log" | sed 's/^/   | /'
  else
    echo "   ok ($(( $(date +%s) - t0 )) s)"
  fi
  return 0
}

ok() { awk -F'\t' -v n="$1" '$1 == n && $3 == 0 { found = 1 } END { exit !found }' "$TIMINGS"; }

# ---- 1. prerequisites ------------------------------------------------------------------------------------------
echo "== prerequisites"
command -v "$PY" > /dev/null || die "python not found ($PY); set PYTHON=/path/to/python"
command -v nvidia-smi > /dev/null || die "nvidia-smi not found: this check needs an NVIDIA GPU and its driver"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
  || die "nvidia-smi cannot query the GPU"
command -v accelerate > /dev/null || die "the accelerate launcher is not on PATH (pip install 'llmrec[gpu]')"
"$PY" - > "$WORK/prerequisites.txt" <<'EOF' || die "prerequisites missing (above); install with: pip install -e '.[gpu]' (vllm, deepspeed, bitsandbytes)"
import importlib
import sys

missing, versions = [], {}
for name in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "deepspeed", "vllm", "pandas",
             "pyarrow", "yaml", "safetensors", "matplotlib", "tokenizers", "llmrec"):
    try:
        mod = importlib.import_module(name)
        versions[name] = getattr(mod, "__version__", "?")
    except Exception as e:  # noqa: BLE001 - report every missing piece at once
        missing.append(f"{name}: {type(e).__name__}: {e}")
if "torch" in versions:
    import torch

    if not torch.cuda.is_available():
        missing.append(f"CUDA: torch {torch.__version__} sees no GPU (a CPU build of torch?)")
    elif not torch.cuda.is_bf16_supported():
        missing.append("bf16: this GPU does not support bfloat16 (the check trains in bf16)")
    else:
        versions["gpu"] = torch.cuda.get_device_name(0)
print(" ".join(f"{k}={v}" for k, v in versions.items()))
if missing:
    print("missing or broken:\n  " + "\n  ".join(missing), file=sys.stderr)
    sys.exit(1)
EOF
cat "$WORK/prerequisites.txt"
printf '%s\t%s\t%s\n' prerequisites "$(( $(date +%s) - START ))" 0 >> "$TIMINGS"

# ---- 2. setup: data, small model, brief full SFT ---------------------------------------------------------------
run prepare "$PY" benchmarks/vllm_vs_hf.py prepare "$WORK"
ok prepare || die "could not prepare the inputs (see $WORK/prepare.log)"
if [ ! -f "$WORK/sft/final/llmrec.json" ]; then
  run sft "$PY" -m llmrec.train "$WORK/sft.yaml"
else
  printf '%s\t%s\t%s\n' sft 0 0 >> "$TIMINGS"
fi
ok sft || die "SFT of the small model failed (see $WORK/sft.log)"

# ---- 3. vLLM vs transformers: same lists, users/s at 50 beams ---------------------------------------------------
run compare "$PY" benchmarks/vllm_vs_hf.py compare --model "$WORK/sft/final" --data "$WORK/shop" \
  --users 512 --beams 50 --k 10 --dtype bfloat16 --fp32-reference --out "$WORK/compare.json"

# ---- 4. LoRA SFT and GRPO steps under DeepSpeed ZeRO-2 ----------------------------------------------------------
run sft-lora-zero2 accelerate launch --config_file "$WORK/accelerate-zero2.yaml" -m llmrec.train \
  "$WORK/sft-lora-zero2.yaml" resume=false
run grpo-lora-zero2 accelerate launch --config_file "$WORK/accelerate-zero2.yaml" -m llmrec.rl \
  "$WORK/grpo-lora-zero2.yaml" resume=false

# ---- optional: throughput at a realistic size --------------------------------------------------------------------
if [ $(( $(date +%s) - START )) -lt "$BUDGET_S" ]; then
  run shape-0.5b "$PY" benchmarks/vllm_vs_hf.py shape-0.5b "$WORK"
  if ok shape-0.5b; then
    run compare-0.5b "$PY" benchmarks/vllm_vs_hf.py compare --model "$WORK/shape-0.5b" --data "$WORK/shop" \
      --users 256 --beams 50 --k 10 --dtype bfloat16 --out "$WORK/compare-0.5b.json"
  fi
else
  echo "== skipping the 0.5B-shape throughput (past BUDGET_S=$BUDGET_S s)"
fi

# ---- 5. one table ------------------------------------------------------------------------------------------------
set +e
"$PY" benchmarks/vllm_vs_hf.py table "$WORK" | tee "$WORK/table.md"
status=${PIPESTATUS[0]}
set -e
echo "wall time $(( $(date +%s) - START )) s; logs in $WORK"
exit "$status"
