"""Parameter-efficient fine-tuning: LoRA, AdaLoRA and prefix tuning.

LoRA (`enable_lora`) learns a low-rank update of fixed rank on chosen
projection kernels. AdaLoRA (`enable_adalora`) writes the update in SVD
form, `P @ diag(lambda) @ Q`, on the same projections, and its callback
`AdaLoRABudget` prunes the weakest singular triplets over all kernels
together, on a cubic schedule, from an initial rank to an average target
rank, so the kernels that matter keep more rank; `save_adalora`,
`load_adalora`, `restore_adalora` and `merge_adalora` mirror LoRA's file
and merge functions. Prefix tuning (`enable_prefix_tuning`) learns extra
key/value vectors per head. Each freezes the backbone and trains the task
head with its own weights.
"""

from keras_encoder.adapters.adalora import (
    AdaLoRABudget,
    adalora_budget,
    adalora_kept_ranks,
    adalora_summary,
    enable_adalora,
    load_adalora,
    mask_triplets,
    merge_adalora,
    orthogonality_loss,
    restore_adalora,
    save_adalora,
)
from keras_encoder.adapters.lora import (
    enable_lora,
    load_adapters,
    lora_summary,
    merge_adapters,
    restore_adapters,
    save_adapters,
)
from keras_encoder.adapters.prefix import enable_prefix_tuning

__all__ = [
    "AdaLoRABudget",
    "adalora_budget",
    "adalora_kept_ranks",
    "adalora_summary",
    "enable_adalora",
    "enable_lora",
    "enable_prefix_tuning",
    "load_adalora",
    "load_adapters",
    "lora_summary",
    "mask_triplets",
    "merge_adalora",
    "merge_adapters",
    "orthogonality_loss",
    "restore_adalora",
    "restore_adapters",
    "save_adalora",
    "save_adapters",
]
