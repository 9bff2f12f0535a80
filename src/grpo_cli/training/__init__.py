"""The training loop: the trainer (sample, verify, learn, evaluate, save), the learner (log-probs and the update),
rollouts, the one-step-ahead sampler process, checkpoints, torchrun support, SFT and pass@k evaluation."""
