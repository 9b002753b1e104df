"""One Transformer encoder block.

Shape legend: B batch, T tokens, N heads, D hidden, F feed-forward width.
"""

import keras

from keras_encoder.layers.layer_utils import (
    check_greater,
    check_positive_int,
    check_rate,
)
from keras_encoder.layers.attention import MultiHeadSelfAttention


@keras.saving.register_keras_serializable(package="keras_encoder")
class TransformerEncoderBlock(keras.layers.Layer):
    """Self-attention and a feed-forward network, each with residual + norm.

    Post-norm (the default, as in "Attention Is All You Need"):
    `x = norm(x + dropout(attention(x)))`, then
    `x = norm(x + dropout(ffn(x)))`. Pre-norm (`norm_first=True`, more
    stable for deep stacks): `x = x + dropout(attention(norm(x)))`, then
    `x = x + dropout(ffn(norm(x)))`. The feed-forward network is
    `Dense(intermediate_dim, activation)` followed by `Dense(D)`.

    Masking: accepts the same `padding_mask`, `attention_mask` and Keras
    implicit mask as `MultiHeadSelfAttention` (combined with logical AND;
    `True` means "attend") and passes the Keras mask on to its output.

    Args:
        num_heads: int. Number of attention heads; must divide the hidden
            size unless `key_dim` is given.
        intermediate_dim: int. Width `F` of the feed-forward network.
        dropout: float. Dropout on attention weights and on both residual
            branches. Defaults to `0.0`.
        activation: string or callable. Feed-forward activation. Defaults to
            `"relu"`.
        norm_first: bool. Pre-norm if `True`, post-norm if `False`. Defaults
            to `False`.
        layer_norm_epsilon: float. Epsilon of both layer norms. Defaults to
            `1e-5`.
        use_rotary: bool. Whether attention uses rotary position
            embeddings. Defaults to `False`.
        prefix_length: int. Learned key/value prefix vectors per head of
            the attention (prefix tuning), `0` for none. Defaults to `0`.
        key_dim: int. Size of each head. Defaults to `None`, meaning
            `hidden_dim // num_heads`. A block whose heads were pruned
            (`keras_encoder.compress.prune_heads`) keeps its head size
            with fewer heads.
        kernel_initializer: string or initializer. Defaults to
            `"glorot_uniform"`.
        bias_initializer: string or initializer. Defaults to `"zeros"`.
        **kwargs: other keyword arguments of `keras.layers.Layer`.

    Call arguments:
        inputs: float tensor `(B, T, D)`.
        padding_mask: bool tensor `(B, T)`. Optional.
        attention_mask: bool tensor `(B, T, T)`. Optional.
        training: bool. Whether dropout is active.
        return_attention_scores: bool. If `True`, return `(outputs, scores)`
            with scores `(B, N, T, P + T)`, the `P` prefix columns first
            (none without a prefix). Defaults to `False`.

    Example:
    >>> block = TransformerEncoderBlock(num_heads=4, intermediate_dim=128)
    >>> y = block(keras.random.normal((2, 10, 32)))
    >>> tuple(y.shape)
    (2, 10, 32)

    References:
        - [Vaswani et al., 2017](https://arxiv.org/abs/1706.03762)
        - [Xiong et al., 2020](https://arxiv.org/abs/2002.04745) (pre-norm)
    """

    def __init__(
        self,
        num_heads,
        intermediate_dim,
        dropout=0.0,
        activation="relu",
        norm_first=False,
        layer_norm_epsilon=1e-5,
        use_rotary=False,
        prefix_length=0,
        key_dim=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        check_positive_int("num_heads", num_heads)
        check_positive_int("intermediate_dim", intermediate_dim)
        check_positive_int("key_dim", key_dim, allow_none=True)
        check_positive_int("prefix_length", prefix_length, allow_zero=True)
        check_rate("dropout", dropout)
        check_greater("layer_norm_epsilon", layer_norm_epsilon, 0)
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.key_dim = key_dim
        self.dropout = dropout
        self.activation = keras.activations.get(activation)
        self.norm_first = norm_first
        self.layer_norm_epsilon = layer_norm_epsilon
        self.use_rotary = use_rotary
        self.prefix_length = prefix_length
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.supports_masking = True

    def build(self, input_shape):
        hidden_dim = input_shape[-1]
        if self.key_dim is None and hidden_dim % self.num_heads:
            raise ValueError(
                f"The hidden size ({hidden_dim}) must be divisible by "
                f"`num_heads`. Received: num_heads={self.num_heads}"
            )
        initializers = {
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer
            ),
            "bias_initializer": keras.initializers.serialize(
                self.bias_initializer
            ),
        }
        self.attention = MultiHeadSelfAttention(
            num_heads=self.num_heads,
            key_dim=self.key_dim,
            dropout=self.dropout,
            use_rotary=self.use_rotary,
            prefix_length=self.prefix_length,
            dtype=self.dtype_policy,
            name="attention",
            **initializers,
        )
        self.attention.build(input_shape)
        self.attention_dropout = keras.layers.Dropout(
            self.dropout, dtype=self.dtype_policy, name="attention_residual_dropout"
        )
        self.attention_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon,
            dtype=self.dtype_policy,
            name="attention_norm",
        )
        self.attention_norm.build(input_shape)
        self.ffn_inner = keras.layers.Dense(
            self.intermediate_dim,
            activation=self.activation,
            dtype=self.dtype_policy,
            name="ffn_inner",
            **initializers,
        )
        self.ffn_inner.build(input_shape)
        self.ffn_outer = keras.layers.Dense(
            hidden_dim, dtype=self.dtype_policy, name="ffn_outer", **initializers
        )
        self.ffn_outer.build(tuple(input_shape[:-1]) + (self.intermediate_dim,))
        self.ffn_dropout = keras.layers.Dropout(
            self.dropout, dtype=self.dtype_policy, name="ffn_residual_dropout"
        )
        self.ffn_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="ffn_norm"
        )
        self.ffn_norm.build(input_shape)

    def enable_prefix(self, prefix_length):
        """Give the built block's attention a learned prefix (prefix tuning).

        See `MultiHeadSelfAttention.enable_prefix`; the block's config
        records `prefix_length`, so a saved model rebuilds the prefix.
        """
        if not self.built:
            raise ValueError(
                "enable_prefix needs a built block; call the block once or "
                "pass `prefix_length` to the constructor."
            )
        self.attention.enable_prefix(prefix_length)
        self.prefix_length = prefix_length

    def call(
        self,
        inputs,
        padding_mask=None,
        attention_mask=None,
        mask=None,
        training=None,
        return_attention_scores=False,
    ):
        x = inputs  # (B, T, D)
        residual = x
        if self.norm_first:
            x = self.attention_norm(x)
        attended = self.attention(
            x,
            padding_mask=padding_mask,
            attention_mask=attention_mask,
            mask=mask,
            training=training,
            return_attention_scores=return_attention_scores,
        )
        if return_attention_scores:
            attended, scores = attended  # scores: (B, N, T, P + T)
        x = residual + self.attention_dropout(attended, training=training)
        if not self.norm_first:
            x = self.attention_norm(x)

        residual = x
        if self.norm_first:
            x = self.ffn_norm(x)
        x = self.ffn_outer(self.ffn_inner(x))  # (B, T, F) -> (B, T, D)
        x = residual + self.ffn_dropout(x, training=training)
        if not self.norm_first:
            x = self.ffn_norm(x)

        if return_attention_scores:
            return x, scores
        return x

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "intermediate_dim": self.intermediate_dim,
                "key_dim": self.key_dim,
                "dropout": self.dropout,
                "activation": keras.activations.serialize(self.activation),
                "norm_first": self.norm_first,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "use_rotary": self.use_rotary,
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
