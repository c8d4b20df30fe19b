"""Model evaluation: greedy generation (sized by memory), scoring and bootstrap statistics."""
