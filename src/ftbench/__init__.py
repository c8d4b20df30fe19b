"""ftbench: a reproducible benchmark of QLoRA, GaLore and a staged QLoRA -> GaLore hybrid."""

import os

# Forward passes change shape from one micro-batch to the next (lengths vary); with fixed-size segments
# the CUDA caching allocator fragments and the device holds several GiB more than torch uses. This must
# be set before torch first touches the GPU, hence at package import. A user's own setting wins.
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

if os.environ.get("FTBENCH_WARM"):  # a stage command a warm server may run (ftbench/warm.py), before imports
    from ftbench import handover

    handover.hand_over()

from ftbench import progress  # noqa: E402  (after the allocator setting, which must come first)

progress.quiet_third_party()
