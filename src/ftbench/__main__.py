"""`python -m ftbench`: the `ftbench` command, where its script is not installed."""

from ftbench.cli import main

main()
