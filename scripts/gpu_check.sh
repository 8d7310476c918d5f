#!/usr/bin/env bash
# The GPU path, end to end, in one short run (about 5 minutes on one H100; at most 8).
#
#   bash scripts/gpu_check.sh                # on a CUDA machine: every case on the GPU(s)
#   bash scripts/gpu_check.sh --cpu          # the same cases on the CPU, tiny budgets (tests)
#   bash scripts/gpu_check.sh --out FILE     # the log's path (default reports/throughput/gpu_check.txt)
#
# Cases: the quickstart on one GPU; DDP with configs/trainer/ddp.yaml on every GPU present
# (--cpu: configs/trainer/cpu.yaml, 2 gloo processes); the sparse step
# (--model.sparse_embeddings true) and the fused (Triton on a GPU) sparse step
# (--model.fused_sparse_step true); sparse embeddings under DDP (NCCL must refuse them in one
# line, exit 2; gloo trains them); the export of the quickstart checkpoint
# (resemb-pl-export model) with its scores checked against the Lightning model's; and
# scripts/benchmark.py: the micro step at 367,984 and 1,000,000 items and --end-to-end.
# Each case prints one line: its name, ok/FAILED, seconds and samples/s. The samples/s of a
# resemb-pl fit case is its trained samples over the whole command's wall time (start-up, data
# and compilation included): a floor; scripts/benchmark.py's figures time the steps alone.
# The log (everything printed) is written to --out when the run ends; the exit code is 1 if
# a case failed.
set -uo pipefail

MODE=gpu
OUT=reports/throughput/gpu_check.txt
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) MODE=cpu ;;
    --out) OUT="$2"; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: error: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

cd "$(dirname "$0")/.."
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
LOG="$WORK/log.txt"
trap 'rm -rf "$WORK"' EXIT
export PYTHONWARNINGS=ignore

if [ "$MODE" = gpu ]; then
  ACCEL=(--trainer.accelerator gpu --trainer.devices 1)
  DDP_TRAINER=configs/trainer/ddp.yaml
  STEPS=200; BATCH=1024; BENCH_STEPS=30; E2E_STEPS=100; E2E_DATA=(sports electronics)
  ITEMS=(367984 1000000); DEVICE=cuda
else
  ACCEL=(--trainer.accelerator cpu --trainer.devices 1)
  DDP_TRAINER=configs/trainer/cpu.yaml
  STEPS=2; BATCH=64; BENCH_STEPS=2; E2E_STEPS=2; E2E_DATA=(tiny)
  ITEMS=(2000); DEVICE=cpu
fi
PRESET=$([ "$MODE" = gpu ] && echo small || echo tiny)
FAILED=0

say() { echo "$*" | tee -a "$LOG"; }

# case NAME SAMPLES EXPECT CMD...: run CMD, its output to the log; one summary line. EXPECT is
# the exit code that means success (0, or 2 for a refusal).
case_() {
  local name=$1 samples=$2 expect=$3; shift 3
  say ""
  say "### $name: $*"
  local start end rc
  start=$(date +%s.%N)
  "$@" >>"$LOG" 2>&1
  rc=$?
  end=$(date +%s.%N)
  local secs rate status=ok
  secs=$(python -c "print(f'{$end - $start:.1f}')")
  rate=$(python -c "print(f'{$samples / ($end - $start):.0f}' if $samples else '-')")
  if [ "$rc" != "$expect" ]; then status="FAILED (exit $rc, expected $expect)"; FAILED=1; fi
  tail -n 3 "$LOG" | sed 's/^/    /'
  say "CASE $name: $status, ${secs} s, ${rate} samples/s"
}

say "gpu_check.sh --mode $MODE, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
if ! python -c "import resemb_pl, pytest, hypothesis" >/dev/null 2>&1; then
  say "installing: pip install -e .[test]"
  python -m pip install -q -e ".[test]" >>"$LOG" 2>&1 || { say "pip install failed"; FAILED=1; }
fi
python - <<'EOF' 2>&1 | tee -a "$LOG"
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"{torch.cuda.device_count()} GPU(s): "
      + ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())))
EOF
if [ "$MODE" = gpu ]; then
  GPUS=$(python -c "import torch; print(torch.cuda.device_count())")
  if [ "$GPUS" -lt 1 ]; then
    say "gpu_check.sh: error: no CUDA GPU (torch.cuda.is_available() is false); --cpu runs the CPU parts"
    mkdir -p "$(dirname "$OUT")"; cp "$LOG" "$OUT.tmp" && mv "$OUT.tmp" "$OUT"
    exit 2
  fi
else
  GPUS=2  # the gloo processes of configs/trainer/cpu.yaml
fi

FIT=(resemb-pl fit --config configs/quickstart.yaml "${ACCEL[@]}" --data.preset "$PRESET"
     --data.batch_size "$BATCH" --data.cache_dir "$WORK/cache" --trainer.max_epochs 1
     --trainer.limit_train_batches "$STEPS" --trainer.limit_val_batches 2
     --trainer.enable_progress_bar false --trainer.enable_model_summary false
     --trainer.default_root_dir "$WORK")  # config.yaml of a logger-less run goes there
SAMPLES=$((STEPS * BATCH))

case_ quickstart "$SAMPLES" 0 "${FIT[@]}" --trainer.logger.init_args.save_dir "$WORK/runs"
case_ sparse "$SAMPLES" 0 "${FIT[@]}" --trainer.logger false --trainer.callbacks '[]' \
  --trainer.enable_checkpointing false --model.sparse_embeddings true
case_ fused_sparse "$SAMPLES" 0 "${FIT[@]}" --trainer.logger false --trainer.callbacks '[]' \
  --trainer.enable_checkpointing false --model.sparse_embeddings true \
  --model.fused_sparse_step true

DDP=(resemb-pl fit --config configs/default.yaml --trainer "$DDP_TRAINER"
     --data configs/data/synthetic_small.yaml --model configs/model/din_att.yaml
     --data.preset "$PRESET" --data.batch_size "$BATCH" --data.cache_dir "$WORK/cache"
     --trainer.max_epochs 1 --trainer.limit_train_batches "$STEPS" --trainer.limit_val_batches 2
     --trainer.logger false --trainer.callbacks '[]' --trainer.enable_checkpointing false
     --trainer.enable_progress_bar false --trainer.enable_model_summary false
     --trainer.default_root_dir "$WORK")
case_ "ddp_${GPUS}x" $((SAMPLES * GPUS)) 0 "${DDP[@]}"
if [ "$MODE" = gpu ] && [ "$GPUS" -gt 1 ]; then
  # NCCL cannot all-reduce sparse gradients: refused in one line before training.
  case_ ddp_sparse_refused 0 2 "${DDP[@]}" --model.sparse_embeddings true
  if ! grep -q "^resemb-pl: error: model.sparse_embeddings: NCCL" "$LOG"; then
    say "CASE ddp_sparse_refused: FAILED (no one-line refusal in the log)"; FAILED=1
  fi
elif [ "$MODE" = cpu ]; then
  case_ ddp_sparse_gloo $((SAMPLES * GPUS)) 0 "${DDP[@]}" --model.sparse_embeddings true
else
  say "(one GPU: the DDP sparse refusal needs 2; its logic is tested in tests/test_gpu_check.py)"
fi

CKPT="$WORK/runs/quickstart/version_0/checkpoints/last.ckpt"
case_ export 0 0 resemb-pl-export model --ckpt_path "$CKPT" --out "$WORK/export" --no_onnx
case_ export_scores 0 0 python - "$CKPT" "$WORK/export/model.pt2" <<'EOF'
import sys

import torch

from resemb_pl.export import load_task

task = load_task(sys.argv[1]).eval()
program = torch.export.load(sys.argv[2]).module()
category = torch.as_tensor(task.catalogue.item_category, dtype=torch.long)
gen = torch.Generator().manual_seed(0)
n = task.hparams.num_items
hist = torch.randint(0, n + 1, (64, 12), generator=gen)
target = torch.randint(1, n + 1, (64,), generator=gen)
with torch.no_grad():
    want = torch.sigmoid(task({"hist": hist, "hist_cat": category[hist], "target": target,
                               "target_cat": category[target]}))
    got = program(hist, target)
diff = float((got - want).abs().max())
print(f"export scores: max |pt2 - Lightning| = {diff:.2e} over {len(want)} requests")
assert diff < 1e-5, diff
EOF

case_ benchmark_micro 0 0 python scripts/benchmark.py --items "${ITEMS[@]}" --device "$DEVICE" \
  --steps "$BENCH_STEPS" --warmup 2 --presets --eval-samples 20000
case_ benchmark_micro_fused 0 0 python scripts/benchmark.py --items "${ITEMS[0]}" \
  --device "$DEVICE" --steps "$BENCH_STEPS" --warmup 2 --presets --eval-samples 20000 --fused
case_ benchmark_end_to_end 0 0 python scripts/benchmark.py --end-to-end --device "$DEVICE" \
  --data "${E2E_DATA[@]}" --steps "$E2E_STEPS" --warmup 2 --repeats 1 \
  --cache-dir "$WORK/cache"
say ""
say "samples/s of the benchmarks (from the log above):"
grep -E "^ *[0-9,]+ +[0-9.]+ +[0-9]+ |^(data|tiny|Amazon|small|electronics|books) " "$LOG" \
  | sed 's/^/    /' | tee -a "$LOG.summary" >/dev/null
cat "$LOG.summary" 2>/dev/null | tee -a "$LOG"
say ""
say "gpu_check.sh: $([ $FAILED = 0 ] && echo 'every case passed' || echo 'some case FAILED')"
mkdir -p "$(dirname "$OUT")"
cp "$LOG" "$OUT.tmp" && mv "$OUT.tmp" "$OUT"
exit $FAILED
