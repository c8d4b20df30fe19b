"""The training loop shared by every recipe: passes, CUDA graphs and resumable checkpoints."""
