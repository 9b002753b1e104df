"""The training run's optimizer: AdamW with warm-up, cosine decay and an optional weight average."""

import keras


def make_optimizer(config, steps_per_epoch):
    """AdamW with linear warm-up and cosine decay to zero over the run.

    With `config.ema > 0` the optimizer also keeps an exponential moving
    average of the weights (`use_ema`) with that momentum; biases and
    LayerNorm scales and offsets get no weight decay.
    """
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = int(config.warmup_fraction * total_steps)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=max(total_steps - warmup_steps, 1),
        warmup_target=config.learning_rate,
        warmup_steps=warmup_steps,
    )
    use_ema = bool(config.ema)
    optimizer = keras.optimizers.AdamW(
        learning_rate=schedule,
        weight_decay=config.weight_decay,
        clipnorm=1.0,
        use_ema=use_ema,
        ema_momentum=config.ema if use_ema else 0.99,
    )
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer
