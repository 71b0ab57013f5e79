"""Floor 2: where and how tensors are computed: device, precision (bf16 autocast, kept bf16 weight copies), the optimizer step, denormal flushing, and torchrun/DDP glue."""
