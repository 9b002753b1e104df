"""Multi-head self-attention.

Shape legend: B batch, T query tokens, S key tokens, N heads, H head size,
D hidden.
"""

import math

import keras
from keras import ops

from keras_encoder.layers.layer_utils import check_positive_int, check_rate
from keras_encoder.layers.masking import merge_masks
from keras_encoder.layers.position import RotaryEmbedding


# Scores are masked in float32. This is far below any real score, so exp()
# underflows to exactly 0, yet finite, so a fully masked row still gives a
# finite (uniform) softmax instead of NaN.
_MASKED_SCORE = -0.7 * 3.4028235e38


@keras.saving.register_keras_serializable(package="keras_encoder")
class MultiHeadSelfAttention(keras.layers.Layer):
    """Multi-head scaled dot-product self-attention.

    Projects the input to queries, keys and values for `num_heads` heads,
    attends with `softmax(q k^T / sqrt(H))` and projects the concatenated
    heads back to the input width. Projections are `keras.layers.EinsumDense`
    with the kernel shapes of `keras.layers.MultiHeadAttention` (query, key
    and value `(D, N, H)`, output `(N, H, D)`), so Keras' `enable_lora` and
    `quantize("int8")` apply to them.

    Masking: a `padding_mask` `(B, S)`, an `attention_mask` `(B, T, S)` and
    the Keras implicit mask of the input (from `mask_zero=True` upstream) are
    combined with a logical AND; `True` means "attend". Masked keys get
    exactly zero attention weight. The input's Keras mask is passed on to
    the output.

    When scores are not requested (and no attention dropout is active) the
    layer takes the fused `keras.ops.dot_product_attention` path; otherwise
    it computes the softmax explicitly and can return the weights.

    Prefix tuning: a prefix is `P` extra key and value vectors per head,
    put in front of the keys and values that the tokens project to, which
    every query may attend to and no mask hides (padding keys still get
    zero weight). Pass one with the `prefix` call argument, or give the
    layer its own learned prefix with `prefix_length` (or
    `enable_prefix(P)` on a built layer): the weights `prefix_key` and
    `prefix_value`, `(P, N, H)` each.

    Head gates: while the attribute `head_gates` holds a tensor `(N,)` or
    `(B, N)`, each head's output is multiplied by its gate before the
    output projection (`None`, the default, leaves the heads alone). The
    gradient of a loss with respect to gates of ones scores each head's
    importance (`keras_encoder.compress.head_importance`); the gates are
    not weights and are not saved.

    Args:
        num_heads: int. Number of attention heads.
        key_dim: int. Size of each head. Defaults to `None`, meaning
            `hidden_dim // num_heads` (which must then divide exactly).
        dropout: float. Dropout rate on the attention weights. Defaults to
            `0.0`.
        use_bias: bool. Whether the projections have biases. Defaults to
            `True`.
        use_rotary: bool. Whether to rotate queries and keys with
            `RotaryEmbedding`. Defaults to `False`.
        rotary_max_wavelength: float. Longest rotary wavelength. Defaults to
            `10000`.
        prefix_length: int. Learned prefix vectors per head, `0` for none.
            Defaults to `0`.
        kernel_initializer: string or initializer. Defaults to
            `"glorot_uniform"`.
        bias_initializer: string or initializer. Defaults to `"zeros"`.
        **kwargs: other keyword arguments of `keras.layers.Layer`.

    Call arguments:
        inputs: float tensor `(B, T, D)`.
        padding_mask: bool tensor `(B, T)`, `True` for real tokens. Optional.
        attention_mask: bool tensor `(B, T, T)`. Optional.
        prefix: `(prefix_key, prefix_value)`, float tensors `(P, N, H)` (one
            prefix for every row) or `(B, P, N, H)`. Optional; used instead
            of the layer's own prefix. Keys of a prefix are not rotated.
        training: bool. Whether attention dropout is active.
        return_attention_scores: bool. If `True`, return
            `(outputs, scores)` with scores `(B, N, T, P + T)`, the
            attention weights after softmax, the prefix's `P` columns first
            (`P = 0` without a prefix). Defaults to `False`.

    Example:
    >>> layer = MultiHeadSelfAttention(num_heads=4)
    >>> x = keras.random.normal((2, 10, 32))
    >>> y, scores = layer(x, return_attention_scores=True)
    >>> tuple(scores.shape)
    (2, 4, 10, 10)

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762)
        - [Li and Liang, 2021](https://arxiv.org/abs/2101.00190) (prefix tuning)
    """

    def __init__(
        self,
        num_heads,
        key_dim=None,
        dropout=0.0,
        use_bias=True,
        use_rotary=False,
        rotary_max_wavelength=10000,
        prefix_length=0,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        check_positive_int("num_heads", num_heads)
        check_positive_int("key_dim", key_dim, allow_none=True)
        check_positive_int("prefix_length", prefix_length, allow_zero=True)
        check_rate("dropout", dropout)
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.dropout = dropout
        self.use_bias = use_bias
        self.use_rotary = use_rotary
        self.rotary_max_wavelength = rotary_max_wavelength
        self.prefix_length = prefix_length
        self.head_gates = None
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.supports_masking = True

    def build(self, input_shape):
        hidden_dim = input_shape[-1]
        if self.key_dim is None and hidden_dim % self.num_heads:
            raise ValueError(
                f"The hidden size ({hidden_dim}) must be divisible by "
                f"`num_heads` when `key_dim` is not given. "
                f"Received: num_heads={self.num_heads}"
            )
        head_dim = self.key_dim or hidden_dim // self.num_heads
        if self.use_rotary and head_dim % 2:
            raise ValueError(
                "Rotary embeddings need an even head size. "
                f"Received: key_dim={head_dim}, num_heads={self.num_heads}"
            )
        self._head_dim = head_dim
        projection_bias = "nh" if self.use_bias else None

        def projection(name):
            layer = keras.layers.EinsumDense(
                "btd,dnh->btnh",
                output_shape=(None, self.num_heads, head_dim),
                bias_axes=projection_bias,
                kernel_initializer=self._clone(self.kernel_initializer),
                bias_initializer=self._clone(self.bias_initializer),
                dtype=self.dtype_policy,
                name=name,
            )
            layer.build(input_shape)
            # The mask is consumed by the attention below; let it pass through
            # the projection silently instead of warning that it is dropped.
            layer.supports_masking = True
            return layer

        self.query_dense = projection("query")
        self.key_dense = projection("key")
        self.value_dense = projection("value")
        self.output_dense = keras.layers.EinsumDense(
            "btnh,nhd->btd",
            output_shape=(None, hidden_dim),
            bias_axes="d" if self.use_bias else None,
            kernel_initializer=self._clone(self.kernel_initializer),
            bias_initializer=self._clone(self.bias_initializer),
            dtype=self.dtype_policy,
            name="attention_output",
        )
        self.output_dense.build(
            (input_shape[0], input_shape[1], self.num_heads, head_dim)
        )
        self.output_dense.supports_masking = True
        self.rotary = (
            RotaryEmbedding(
                self.rotary_max_wavelength, dtype=self.dtype_policy, name="rotary"
            )
            if self.use_rotary
            else None
        )
        self.weights_dropout = keras.layers.Dropout(
            self.dropout, dtype=self.dtype_policy, name="attention_dropout"
        )
        if self.prefix_length:
            self._add_prefix_weights()

    def enable_prefix(self, prefix_length):
        """Give a built layer a learned prefix of `prefix_length` vectors.

        Adds the weights `prefix_key` and `prefix_value`, `(P, N, H)` each,
        drawn from a normal distribution with standard deviation 0.02 (the
        BERT initializer's), and records `prefix_length` in the config, so
        a saved model rebuilds them.

        Raises:
            ValueError: the layer is not built, already has a prefix, or
                `prefix_length` is not a positive integer.
        """
        check_positive_int("prefix_length", prefix_length)
        if not self.built:
            raise ValueError(
                "enable_prefix needs a built layer; call the layer once or "
                "pass `prefix_length` to the constructor."
            )
        if self.prefix_length:
            raise ValueError(
                f"This layer already has a prefix of length {self.prefix_length}."
            )
        self._add_prefix_weights(prefix_length)
        self.prefix_length = prefix_length

    def _add_prefix_weights(self, prefix_length=None):
        shape = (prefix_length or self.prefix_length, self.num_heads, self._head_dim)
        # New state after build is allowed, as `enable_lora` does; inside
        # `build` the tracker is still open and Keras locks it afterwards.
        was_locked = self._tracker.locked
        self._tracker.unlock()
        try:
            for name in ("prefix_key", "prefix_value"):
                setattr(self, name, self.add_weight(
                    name=name,
                    shape=shape,
                    initializer=keras.initializers.RandomNormal(stddev=0.02),
                ))
        finally:
            if was_locked:
                self._tracker.lock()

    def call(
        self,
        inputs,
        padding_mask=None,
        attention_mask=None,
        prefix=None,
        mask=None,
        training=None,
        return_attention_scores=False,
    ):
        merged_mask = merge_masks(padding_mask, attention_mask, mask)
        if merged_mask is not None:
            merged_mask = merged_mask[:, None, :, :]  # (B, 1, T|1, S)

        query = self.query_dense(inputs)  # (B, T, N, H)
        key = self.key_dense(inputs)  # (B, S, N, H)
        value = self.value_dense(inputs)  # (B, S, N, H)
        if self.rotary is not None:
            query = self.rotary(query)
            key = self.rotary(key)
        if prefix is None and self.prefix_length:
            prefix = (self.prefix_key, self.prefix_value)
        if prefix is not None:
            key, value, merged_mask = self._prepend(prefix, key, value, merged_mask)

        explicit = return_attention_scores or (
            training and self.dropout > 0.0
        )
        if explicit:
            query = query * ops.cast(
                1.0 / math.sqrt(self._head_dim), query.dtype
            )
            scores = ops.einsum("btnh,bsnh->bnts", query, key)  # (B, N, T, S)
            # Softmax in float32 even under mixed precision.
            scores = ops.cast(scores, "float32")
            if merged_mask is not None:
                scores = ops.where(merged_mask, scores, _MASKED_SCORE)
            weights = ops.cast(ops.softmax(scores, axis=-1), value.dtype)
            dropped = self.weights_dropout(weights, training=training)
            context = ops.einsum("bnts,bsnh->btnh", dropped, value)  # (B, T, N, H)
        else:
            context = ops.dot_product_attention(
                query, key, value, mask=merged_mask
            )  # (B, T, N, H)

        if self.head_gates is not None:
            gates = ops.cast(self.head_gates, context.dtype)
            if len(gates.shape) == 1:
                gates = gates[None, :]
            context = context * gates[:, None, :, None]  # (B, 1, N, 1)
        outputs = self.output_dense(context)  # (B, T, D)
        if return_attention_scores:
            return outputs, weights
        return outputs

    def _prepend(self, prefix, key, value, merged_mask):
        """Keys and values `(B, P + S, N, H)` and the mask `(B, 1, T|1, P + S)`."""
        if not isinstance(prefix, (tuple, list)) or len(prefix) != 2:
            raise ValueError(
                "`prefix` must be a pair (prefix_key, prefix_value). "
                f"Received: {type(prefix).__name__}"
            )
        prefix_key, prefix_value = prefix
        joined = []
        for name, part, tokens in (("prefix_key", prefix_key, key), ("prefix_value", prefix_value, value)):
            part = ops.cast(part, tokens.dtype)
            if len(part.shape) not in (3, 4) or tuple(part.shape[-2:]) != tuple(tokens.shape[-2:]):
                raise ValueError(
                    f"`{name}` must have shape (P, {self.num_heads}, {self._head_dim}) or "
                    f"(B, P, {self.num_heads}, {self._head_dim}). Received: {tuple(part.shape)}"
                )
            if len(part.shape) == 3:  # one prefix for every row
                batch = ops.shape(tokens)[0]
                part = ops.broadcast_to(part[None], (batch,) + tuple(part.shape))
            joined.append(ops.concatenate([part, tokens], axis=1))
        if merged_mask is not None:
            # The prefix is always visible: True columns in front of the mask.
            visible = ops.repeat(ops.ones_like(merged_mask[..., :1]), prefix_key.shape[-3], axis=-1)
            merged_mask = ops.concatenate([visible, merged_mask], axis=-1)
        return joined[0], joined[1], merged_mask

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "key_dim": self.key_dim,
                "dropout": self.dropout,
                "use_bias": self.use_bias,
                "use_rotary": self.use_rotary,
                "rotary_max_wavelength": self.rotary_max_wavelength,
                "prefix_length": self.prefix_length,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(
                    self.bias_initializer
                ),
            }
        )
        return config

    @staticmethod
    def _clone(initializer):
        # A fresh initializer per projection, so seeded initializers do not
        # give query, key and value identical kernels.
        return initializer.__class__.from_config(initializer.get_config())
