"""grpo-cli: GRPO training on verifiable rewards."""
