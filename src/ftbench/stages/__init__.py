"""DVC stages: one thin entry per stage of dvc.yaml, run as `python -m ftbench <command>`."""
