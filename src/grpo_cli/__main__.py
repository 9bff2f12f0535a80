"""`python -m grpo_cli ...` is `grpo ...` (what torchrun launches: `torchrun ... -m grpo_cli train ...`)."""

from grpo_cli.cli import main

main()
