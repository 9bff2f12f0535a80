"""Write recipes/demo_retention.jsonl: the demo's retention set (eval.retention_path in recipes/demo.yaml).

64 worked solutions from the demo's SFT train split (Harbor level 1, data.seed 1234), as {"prompt", "response"}
rows: text the tiny model learned in SFT that GRPO never trains on (GRPO only scores the model's own samples).
Half use the one-line sum that GRPO learns to avoid, so their NLL rising is the drift the metric is there to see.

    python scripts/make_demo_retention.py
"""

import json
from pathlib import Path

from grpo_cli.compose import compose
from grpo_cli.data.harbor import generate

ROWS = 64
OUT = Path(__file__).resolve().parents[1] / "recipes" / "demo_retention.jsonl"

if __name__ == "__main__":
    train, _, _ = generate(compose(["recipe=demo"]).data)
    with OUT.open("w", encoding="utf-8", newline="\n") as f:
        for example in train[:ROWS]:
            f.write(json.dumps({"prompt": example.question, "response": example.solution}) + "\n")
    print(f"wrote {ROWS} rows to {OUT}")
