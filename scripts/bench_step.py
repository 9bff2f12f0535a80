"""One GRPO step against its bare limits: `grpo bench` (src/grpo_cli/diagnostics/bench.py) as a script.

    .venv/bin/python scripts/bench_step.py recipe=demo                 # after make demo (runs/demo/sft)
    .venv/bin/python scripts/bench_step.py --steps 5 --json recipe=gsm8k

Targets (issue 16, recipe=demo on the 2-core CPU machine): sampler vs bare >= 0.95, learner vs bare >= 0.9,
time/step_s <= 2.96 s (0.75 x the 3.95 s measured before).
"""

import sys

from grpo_cli.cli import main

if __name__ == "__main__":  # the verifier's workers re-import this module
    main(["bench", *sys.argv[1:]])
