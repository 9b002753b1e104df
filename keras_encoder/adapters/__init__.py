"""Parameter-efficient fine-tuning: LoRA adapters and prefix tuning."""

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
    "enable_lora",
    "enable_prefix_tuning",
    "load_adapters",
    "lora_summary",
    "merge_adapters",
    "restore_adapters",
    "save_adapters",
]
