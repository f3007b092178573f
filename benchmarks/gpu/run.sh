#!/usr/bin/env bash
# The GPU run kit: the real steam-ray path on one GPU, inside ~9 minutes, in one command.
#
#   bash benchmarks/gpu/run.sh            # on the GPU machine, from the repo root, .gpu carried
#   bash benchmarks/gpu/run.sh --dry-run  # here: the same chain on CPU at toy sizes (make test)
#
# Stages, each one `steam-ray` command under a hard time budget (a failed or timed-out stage
# is reported and the next still runs): setup (a DistilBERT model dir, randomly initialised,
# and a synthetic Steam-schema CSV), `data prepare --source steam`, `train --use-gpu` (NCCL,
# bf16 autocast, fused AdamW, torch.compile), `tune` (4 trials x 1 worker sharing the GPU,
# 0.25 GPU each, Optuna + ASHA), `serve` on the GPU under closed-loop HTTP load. Then one
# summary: train samples/s and MFU (non-embedding parameters, the FLOP formula of
# benchmarks/bench_gpu_mfu.py), sweep wall time and best metric, serve req/s and p99,
# printed and written to $OUT_DIR/gpu_kit_summary.json (+ gpu_kit_logs.tar.gz).
#
# On the GPU machine Ray and the packages its image lacks come from the carried .gpu/
# (benchmarks/gpu/pack.sh builds it here), unpacked to $SITE and put on PYTHONPATH.
# Every setting below is an environment variable; the defaults fit 9 minutes on an H100/H200
# (2026-12-04, H200: setup 26 s, prepare 51, train 128, serve 72; the sweep's 4 trials had
# only started their data pipelines at 105 s, hence 170).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"
MODE=gpu
for arg in "$@"; do
  case "$arg" in
    --dry-run) MODE=dry-run ;;
    -h | --help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument '$arg' (only --dry-run)" >&2; exit 2 ;;
  esac
done
[[ "${DRY_RUN:-0}" == 1 ]] && MODE=dry-run
T0=$SECONDS

if [[ $MODE == gpu ]]; then
  : "${PYTHON:=python3}" "${UNPACK:=1}" "${TOTAL_S:=540}"
  : "${WORK:=/tmp/steam-ray-gpu-kit}" "${OUT_DIR:=${OUT:-$WORK/out}}"
  : "${ROWS:=160000}" "${MIN_WORDS:=130}" "${MAX_LENGTH:=128}" "${TOKENIZER_ACTORS:=}"
  : "${TRAIN_STEPS:=200}" "${BATCH_SIZE:=512}" "${TRAIN_CPUS:=8}" "${TRAIN_COMPILE:=true}"
  : "${AMP:=bf16}" "${USE_GPU:=--use-gpu}" "${LOG_EVERY:=10}" "${SKIP_WINDOWS:=3}"
  : "${EVAL_ROWS:=4096}" "${EVAL_BATCH:=512}"
  : "${TRIALS:=4}" "${TRIAL_STEPS:=60}" "${TRIAL_CPUS:=2}" "${TRIAL_GPUS:=0.25}" "${EVALS_PER_TRIAL:=2}"
  : "${SERVE_REPLICAS:=2}" "${SERVE_CPUS:=2}" "${SERVE_GPUS:=0.5}" "${SERVE_INGRESS:=2}"
  : "${SERVE_CLIENTS:=64}" "${SERVE_SECONDS:=20}" "${SERVE_WARMUP:=5}" "${SERVE_THREADS:=}"
  : "${SERVE_BATCH:=64}"
  # Caps per stage, seconds; each is also cut to what TOTAL_S leaves.
  : "${BUDGET_SETUP:=45}" "${BUDGET_PREPARE:=65}" "${BUDGET_TRAIN:=150}" "${BUDGET_TUNE:=170}"
  : "${BUDGET_SERVE:=75}"
  TINY=
else
  # Toy sizes: the whole chain on 2 CPU cores in ~5 minutes (make test runs it; 288 s idle);
  # the caps leave room for a loaded machine (tune took 134 s idle and passed 240 s loaded).
  : "${PYTHON:=$REPO/.venv/bin/python}" "${UNPACK:=0}" "${TOTAL_S:=900}"
  : "${WORK:=$(mktemp -d /tmp/steam-ray-gpu-kit-dry.XXXXXX)}" "${OUT_DIR:=$WORK/out}"
  : "${ROWS:=400}" "${MIN_WORDS:=40}" "${MAX_LENGTH:=32}" "${TOKENIZER_ACTORS:=1}"
  : "${TRAIN_STEPS:=3}" "${BATCH_SIZE:=8}" "${TRAIN_CPUS:=1}" "${TRAIN_COMPILE:=false}"
  : "${AMP:=auto}" "${USE_GPU:=--no-gpu}" "${LOG_EVERY:=1}" "${SKIP_WINDOWS:=1}"
  : "${EVAL_ROWS:=64}" "${EVAL_BATCH:=32}"
  : "${TRIALS:=2}" "${TRIAL_STEPS:=2}" "${TRIAL_CPUS:=0.5}" "${TRIAL_GPUS:=}" "${EVALS_PER_TRIAL:=1}"
  : "${SERVE_REPLICAS:=1}" "${SERVE_CPUS:=1}" "${SERVE_GPUS:=0}" "${SERVE_INGRESS:=1}"
  : "${SERVE_CLIENTS:=4}" "${SERVE_SECONDS:=3}" "${SERVE_WARMUP:=1}" "${SERVE_THREADS:=1}"
  : "${SERVE_BATCH:=8}"
  : "${BUDGET_SETUP:=60}" "${BUDGET_PREPARE:=120}" "${BUDGET_TRAIN:=240}" "${BUDGET_TUNE:=360}"
  : "${BUDGET_SERVE:=120}"
  TINY=--tiny
fi
: "${CARRY:=.gpu}" "${SITE:=/tmp/steam-ray-site}" "${STAGES:=setup prepare train tune serve}"
SUMMARY_RESERVE_S=20

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export RAY_USAGE_STATS_ENABLED=0 RAY_DATA_DISABLE_PROGRESS_BARS=1 WANDB_MODE=offline
# Every stage starts a Ray of its own: never one that happens to run on this machine (a test
# session's cluster beside the dry run, a `ray start` head). `serve` gets no RAY_ADDRESS at
# all (kit.py serve-load): steam-ray serve then starts its own Ray with address="local".
export RAY_ADDRESS=local

say() { printf '[gpu-kit %4ds] %s\n' $((SECONDS - T0)) "$*"; }
die() { say "error: $*" >&2; exit 1; }

unpack() {
  [[ -f $CARRY/site.tar.xz ]] || die "$CARRY/site.tar.xz missing: run benchmarks/gpu/pack.sh here and carry $CARRY"
  local want have
  want=$(sed -n 's/^python=//p' "$CARRY/MANIFEST.txt")
  have=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  [[ $want == "$have" ]] || die "the carry holds Python $want wheels, $PYTHON is $have: PY_VERSION=$have bash benchmarks/gpu/pack.sh"
  rm -rf "$SITE" && mkdir -p "$SITE"
  # Python's tarfile: lzma is in every CPython, xz(1) need not be on the machine.
  "$PYTHON" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="data")' \
    "$CARRY/site.tar.xz" "$SITE"
  export PYTHONPATH="$REPO:$SITE${PYTHONPATH:+:$PYTHONPATH}"
  say "unpacked $CARRY/site.tar.xz ($(du -sh "$SITE" | cut -f1)) to $SITE"
}

tokenizer_dir() {
  if [[ $MODE == gpu || -f $CARRY/tokenizer/vocab.txt && $UNPACK == 1 ]]; then
    echo "$(realpath -m "$CARRY")/tokenizer"
  else
    "$PYTHON" -c 'from steam_ray.config import OFFLINE_MODEL_NAME as n, resolve_model; print(resolve_model(n))'
  fi
}

write_config() {
  cat >"$WORK/kit.yaml" <<EOF
# benchmarks/gpu/run.sh ($MODE): the settings the CLI has no flag for.
train:
  model: $WORK/model
  amp: $AMP
  compile: $TRAIN_COMPILE
  wandb: false
  tensorboard: true
  log_every_steps: $LOG_EVERY
  max_eval_rows: $EVAL_ROWS
  eval_batch_size: $EVAL_BATCH
  keep_checkpoints: 1
  max_failures: 0
tune:
  evals_per_trial: $EVALS_PER_TRIAL
  train:
    compile: false
EOF
}

# budget CAP -> the cap, cut to what the total leaves after the summary's reserve.
budget() {
  local left=$((TOTAL_S - (SECONDS - T0) - SUMMARY_RESERVE_S))
  ((left < 5)) && left=5
  echo $(($1 < left ? $1 : left))
}

wants() { [[ " $STAGES " == *" $1 "* ]]; }

stage() {  # stage NAME CAP CMD...: run under kit.py's budget; a failure does not stop the chain
  local name=$1 cap=$2
  shift 2
  wants "$name" || { say "$name: skipped (STAGES)"; return 0; }
  "$PYTHON" benchmarks/gpu/kit.py stage "$name" "$(budget "$cap")" "$WORK" -- "$@" || true
}


serve_checkpoint() {  # the train run's best checkpoint, else the sweep's
  "$PYTHON" - "$WORK" <<'EOF'
import json, sys
from pathlib import Path
for name in ("train", "tune"):
    try:
        ck = json.loads((Path(sys.argv[1]) / name / "result.json").read_text())["best_checkpoint"]
    except (OSError, ValueError, KeyError):
        continue
    if ck:
        print(ck)
        break
EOF
}

collect() {  # what comes back from the device: the summary and one archive of the logs
  mkdir -p "$OUT_DIR"
  tar -czf "$OUT_DIR/gpu_kit_logs.tar.gz" -C "$WORK" --ignore-failed-read \
    logs kit.yaml $(cd "$WORK" && ls stage-*.json serve.json serve.serve.yaml train/result.json \
      tune/result.json data/manifest.json 2>/dev/null) 2>/dev/null || say "log archive incomplete"
}

main() {
  mkdir -p "$WORK" "$OUT_DIR"
  say "mode $MODE, work $WORK, out $OUT_DIR, budget $TOTAL_S s, stages: $STAGES"
  [[ $UNPACK == 1 ]] && unpack
  [[ $UNPACK == 1 ]] || export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
  command -v nvidia-smi >/dev/null && nvidia-smi -L || say "no nvidia-smi: CPU only"
  "$PYTHON" -c 'import sys, torch, ray; print(f"python {sys.version.split()[0]}, torch {torch.__version__}, cuda {torch.cuda.is_available()}, ray {ray.__version__}")' \
    || die "$PYTHON cannot import torch and ray"
  say "$(nproc) CPUs; $(free -g 2>/dev/null | awk '/Mem:/ {print $2 " GiB RAM"}')"
  local tok
  tok=$(tokenizer_dir)
  CLI=("$PYTHON" -m steam_ray.cli)
  write_config

  stage setup "$BUDGET_SETUP" "$PYTHON" benchmarks/gpu/kit.py setup "$WORK" --tokenizer "$tok" \
    --rows "$ROWS" --min-words "$MIN_WORDS" $TINY
  local actors=()
  [[ -n $TOKENIZER_ACTORS ]] && actors=(--tokenizer-actors "$TOKENIZER_ACTORS")
  stage prepare "$BUDGET_PREPARE" "${CLI[@]}" data prepare --source steam --input "$WORK/steam.csv" \
    --output "$WORK/data" --model "$WORK/model" --max-length "$MAX_LENGTH" --no-keep-rejected \
    "${actors[@]}"
  stage train "$BUDGET_TRAIN" "${CLI[@]}" train --config "$WORK/kit.yaml" --data "$WORK/data" \
    --output "$WORK/train" --experiment-name kit --num-workers 1 "$USE_GPU" \
    --cpus-per-worker "$TRAIN_CPUS" --max-steps "$TRAIN_STEPS" --batch-size "$BATCH_SIZE"
  local share=()
  [[ -n $TRIAL_GPUS ]] && share=(--gpus-per-worker "$TRIAL_GPUS")
  # tune against a Ray head of its own (kit.py with-ray says why), not RAY_ADDRESS=local.
  stage tune "$BUDGET_TUNE" "$PYTHON" benchmarks/gpu/kit.py with-ray --num-cpus "$(nproc)" -- \
    "${CLI[@]}" tune --config "$WORK/kit.yaml" --data "$WORK/data" \
    --output "$WORK/tune" --num-samples "$TRIALS" --max-concurrent "$TRIALS" \
    --max-steps "$TRIAL_STEPS" --num-workers 1 --cpus-per-worker "$TRIAL_CPUS" "$USE_GPU" \
    "${share[@]}"
  local ck threads=()
  ck=$(serve_checkpoint)
  [[ -n $SERVE_THREADS ]] && threads=(--threads "$SERVE_THREADS")
  if [[ -n $ck ]]; then
    stage serve "$BUDGET_SERVE" "$PYTHON" benchmarks/gpu/kit.py serve-load --checkpoint "$ck" \
      --data "$WORK/data" --json "$WORK/serve.json" --clients "$SERVE_CLIENTS" \
      --seconds "$SERVE_SECONDS" --warmup "$SERVE_WARMUP" --replicas "$SERVE_REPLICAS" \
      --replica-cpus "$SERVE_CPUS" --replica-gpus "$SERVE_GPUS" \
      --ingress-replicas "$SERVE_INGRESS" --max-batch-size "$SERVE_BATCH" "${threads[@]}" \
      --startup-s "$(budget "$BUDGET_SERVE")"
  else
    say "serve: no checkpoint from train or tune; not run"
  fi

  local settings rc=0
  settings=$(printf '{"rows": %s, "max_length": %s, "train_steps": %s, "batch_size": %s, "compile": %s, "amp": "%s", "trials": %s, "trial_steps": %s, "trial_gpus": "%s", "serve_replicas": %s, "serve_gpus": %s, "serve_clients": %s, "serve_seconds": %s, "total_budget_s": %s}' \
    "$ROWS" "$MAX_LENGTH" "$TRAIN_STEPS" "$BATCH_SIZE" "$TRAIN_COMPILE" "$AMP" "$TRIALS" \
    "$TRIAL_STEPS" "$TRIAL_GPUS" "$SERVE_REPLICAS" "$SERVE_GPUS" "$SERVE_CLIENTS" \
    "$SERVE_SECONDS" "$TOTAL_S")
  "$PYTHON" benchmarks/gpu/kit.py summary "$WORK" --json "$OUT_DIR/gpu_kit_summary.json" \
    --mode "$MODE" --batch-size "$BATCH_SIZE" --skip-windows "$SKIP_WINDOWS" \
    --settings "$settings" || rc=$?
  collect
  say "done in $((SECONDS - T0)) s (exit $rc)"
  return "$rc"
}

main
