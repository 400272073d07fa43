#!/usr/bin/env bash
# Every benchmark on a CUDA machine, fp32 and bf16, tiny and synthetic full-size weights, including
# GenEval's 2,212-image suite timing; writes benchmarks/results/gpu.md (the table the README links).
#   bash benchmarks/gpu.sh                 # on a GPU machine (about 8 minutes on one H100/H200)
#   DEVICE=cpu QUICK=1 bash benchmarks/gpu.sh   # a smoke run of this script itself at toy sizes
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-benchmarks/results}
QUICK=${QUICK:-0}
export HF_HUB_OFFLINE=1
mkdir -p "$OUT/json"
rm -f "$OUT"/json/*.json

if [ "$QUICK" = "1" ]; then
  N_PROVIDERS=8; N_SINGLE=2; N_GENEVAL=8; GENEVAL_SCALE="--scale 320,192"; DPG_FULL=""; DPG_Q=2; FULL_GENEVAL=0
else
  N_PROVIDERS=256; N_SINGLE=32; N_GENEVAL=2212; GENEVAL_SCALE=""; DPG_FULL="--synthetic-full"; DPG_Q=14; FULL_GENEVAL=1
fi

{
  date -u +"%Y-%m-%d %H:%M UTC"
  git rev-parse --short HEAD 2>/dev/null || true
  "$PY" -c "import torch; print('torch', torch.__version__, '| device:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
} > "$OUT/json/environment.txt"

for DTYPE in float32 bfloat16; do
  echo "== providers ($DTYPE, tiny weights)" >&2
  "$PY" benchmarks/bench_providers.py --tiny --device "$DEVICE" --dtype "$DTYPE" --batch-size 32 \
      --n-images "$N_PROVIDERS" --n-single "$N_SINGLE" --json-out "$OUT/json/providers-$DTYPE.json"
  echo "== GenEval ($DTYPE, tiny weights, $N_GENEVAL images)" >&2
  "$PY" benchmarks/bench_geneval.py --device "$DEVICE" --dtype "$DTYPE" --n-images "$N_GENEVAL" \
      --n-single "$N_SINGLE" $GENEVAL_SCALE --json "$OUT/json/geneval-tiny-$DTYPE.json"
  if [ "$FULL_GENEVAL" = "1" ]; then
    echo "== GenEval ($DTYPE, synthetic full-size weights, 256 images)" >&2
    "$PY" benchmarks/bench_geneval.py --synthetic-full --device "$DEVICE" --dtype "$DTYPE" --n-images 256 \
        --n-single 16 --json "$OUT/json/geneval-full-$DTYPE.json"
  fi
  echo "== DPG mPLUG ($DTYPE)" >&2
  "$PY" benchmarks/bench_dpg_vqa.py $DPG_FULL --device "$DEVICE" --dtype "$DTYPE" --questions "$DPG_Q" \
      --json "$OUT/json/dpg-$DTYPE.json" > /dev/null
done
echo "== training: the tiny policy under none / ddp / fsdp on every visible GPU (FSDP2)" >&2
"$PY" benchmarks/bench_train_parallel.py --device "$DEVICE" $( [ "$QUICK" = "1" ] && echo --quick ) \
    --json "$OUT/json/train-parallel.json"
SHARED=${PAINTBENCH_SHARED:-../shared}
if [ -d "$SHARED/vendor/mmada" ] && [ -d "$SHARED/fixtures/mmada" ]; then
  echo "== training: a tiny MMaDA built with MMaDA's own code, under none / ddp / fsdp (the models env)" >&2
  .venv/bin/tox -e models --notest -q
  TINY=$(mktemp -d)
  PYTHONPATH="$SHARED/vendor/mmada" .tox/models/bin/python benchmarks/make_tiny_mmada.py "$TINY/mmada"
  "$PY" -m paintbench weights make-tiny "$TINY/weights" > /dev/null
  PYTHONPATH="$SHARED/vendor/mmada:$PWD" .tox/models/bin/python benchmarks/bench_train_parallel.py --device "$DEVICE" \
      $( [ "$QUICK" = "1" ] && echo --quick ) --label "tiny MMaDA (official code)" --json "$OUT/json/train-mmada.json" \
      policy=mmada "policy_path=$TINY/mmada/model" \
      "policy_options={vq_path: $TINY/mmada/vq, tokenizer_path: $TINY/mmada/tok}" "weights_dir=$TINY/weights" \
      warmstart_steps=0 prompts_per_step=2 group_size=2 rollout_steps=2 inner_iters=2 n_global=1 n_struct=1 \
      cfg_scale=0 "reward=[aesthetic=1.0]" "reward_options={}" guard_every=0
  rm -rf "$TINY"
else
  echo "(no $SHARED/vendor/mmada here: the official-code training run is skipped)" >&2
fi
echo "== serve: two clients against one batched service vs two in-process scorers (tiny weights)" >&2
"$PY" benchmarks/bench_serve.py --metric imagereward --tiny --device "$DEVICE" \
    --num-gpus "$( [ "$DEVICE" = "cpu" ] && echo 0 || echo 0.5 )" --json "$OUT/json/serve-imagereward.json"
"$PY" benchmarks/gpu_table.py "$OUT/json" > "$OUT/gpu.md"
cat "$OUT/gpu.md"
