"""Training-speed measurement on synthetic shapes (the bench command) and its table."""
