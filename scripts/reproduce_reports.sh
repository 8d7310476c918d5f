#!/usr/bin/env bash
# Run every experiment of the paper on the four data sets whose results live in reports/.
#
#     bash scripts/reproduce_reports.sh            # 2 grids at a time, 1 thread each
#     JOBS=4 bash scripts/reproduce_reports.sh     # more at a time on a bigger machine
#     DATASETS="synthetic_small" bash scripts/reproduce_reports.sh
#
# Each line below is one grid (experiment x data set). Grids run JOBS at a time, in the order
# listed (Table 3 first). A grid that was stopped resumes where it stopped: finished cells are
# read back from its results.csv and skipped. Each grid's progress goes to
# reports/<experiment>/<data set>/log.txt.
#
# The budgets are those of the committed reports, cut to fit a 2-core CPU (see
# reports/README.md): one epoch on `small`, two on MovieLens-100K, half an epoch on Beauty and
# a third on Sports; Fig. 5 trains longer to show overfitting.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS="${JOBS:-2}"
DATASETS="${DATASETS:-synthetic_small movielens_100k amazon_beauty amazon_sports}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

budget() {  # the training budget of every grid but Fig. 5, per data set
  case "$1" in
    synthetic_small) echo "--epochs 1" ;;
    movielens_100k) echo "--epochs 2" ;;
    amazon_beauty) echo "--epochs 1 --limit-train-batches 0.5" ;;
    amazon_sports) echo "--epochs 1 --limit-train-batches 0.35" ;;
    *) echo "reproduce_reports.sh: no budget for data set '$1'" >&2; exit 2 ;;
  esac
}

fig5_budget() {  # longer, with a validation every quarter epoch, to show overfitting
  case "$1" in
    synthetic_small) echo "--epochs 4" ;;
    movielens_100k) echo "--epochs 6" ;;
    amazon_beauty) echo "--epochs 2 --limit-train-batches 0.5" ;;
    amazon_sports) echo "--epochs 2 --limit-train-batches 0.35" ;;
  esac
}

grids() {
  local d
  for d in $DATASETS; do
    echo "table3 $d scripts/table3.py --backbones din mlp --seeds 0 1 2 3 4 $(budget "$d")"
  done
  for d in $DATASETS; do
    echo "theorem1 $d scripts/theorem1_radius.py --seeds 0 1 2 $(budget "$d")"
    echo "fig7 $d scripts/fig7_tsne.py --seeds 0 1 2 $(budget "$d")"
  done
  for d in $DATASETS; do
    echo "fig8 $d scripts/fig8_residual_scale.py --embedding att --residual-l2s 0 0.006 0.1 1 10 100 1000" \
      "--seeds 0 1 2 $(budget "$d")"
    echo "fig6 $d scripts/fig6_data_fraction.py --fractions 0.1 0.3 0.5 0.9 --seeds 0 1 2" \
      "$(budget "$d")"
  done
  for d in $DATASETS; do
    echo "fig5 $d scripts/fig5_overfitting.py --embeddings plain att --seeds 0 1 2" \
      "--val-check-interval 0.25 $(fig5_budget "$d")"
  done
}

run_grid() {  # run_grid EXPERIMENT DATASET SCRIPT ARGS...
  local experiment=$1 dataset=$2 script=$3
  shift 3
  mkdir -p "reports/$experiment/$dataset"
  echo "start  $experiment $dataset"
  if python "$script" --data "configs/data/$dataset.yaml" "$@" \
      >>"reports/$experiment/$dataset/log.txt" 2>&1; then
    echo "done   $experiment $dataset"
  else
    echo "FAILED $experiment $dataset (see reports/$experiment/$dataset/log.txt)"
  fi
}
export -f run_grid

for d in $DATASETS; do  # budget() runs inside $(...) below, where its exit would not stop us
  budget "$d" >/dev/null || exit 2
done

grids | xargs -P "$JOBS" -L 1 bash -c 'run_grid "$@"' _
