"""Parameter-efficient fine-tuning: LoRA adapters on the attention projections."""

from keras_encoder.adapters.lora import (
    enable_lora,
    load_adapters,
    lora_summary,
    merge_adapters,
    restore_adapters,
    save_adapters,
)

__all__ = ["enable_lora", "load_adapters", "lora_summary", "merge_adapters", "restore_adapters", "save_adapters"]
