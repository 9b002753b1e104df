"""The training run's optimizer: AdamW with warm-up, cosine decay and an optional weight average."""

import keras
import tensorflow as tf


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
    optimizer = AdamW(
        learning_rate=schedule,
        weight_decay=config.weight_decay,
        clipnorm=1.0,
        use_ema=use_ema,
        ema_momentum=config.ema if use_ema else 0.99,
    )
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer


@keras.saving.register_keras_serializable(package="keras_encoder")
class AdamW(keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` that clips the gradient of the whole batch on several replicas.

    Keras clips each replica's share of the gradient before it sums the
    shares over the replicas, so `clipnorm` would act on partial
    gradients and training on N replicas would differ from training on
    one with the same global batch. Here the sum comes first (the same
    single all-reduce, moved earlier), then the clipping, as on one device.
    """

    _reduced_in_trace = False

    def _clip_gradients(self, grads):
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            present = [index for index, grad in enumerate(grads) if grad is not None]
            summed = context.all_reduce(tf.distribute.ReduceOp.SUM, [grads[i] for i in present])
            grads = list(grads)
            for index, grad in zip(present, summed):
                grads[index] = grad
            self._reduced_in_trace = True
        return super()._clip_gradients(grads)

    def _all_reduce_sum_gradients(self, grads_and_vars):
        if self._reduced_in_trace:  # summed before clipping, in this same step
            self._reduced_in_trace = False
            return list(grads_and_vars)
        return super()._all_reduce_sum_gradients(grads_and_vars)
