"""The commands around a run: `grpo plan` (compute and memory before a run), `grpo doctor` (can this machine run
it), `grpo preflight` (is there signal to learn), `grpo bench` (phases against their bare limits) and `grpo audit`
(does a correct answer rest on correct reasoning)."""
