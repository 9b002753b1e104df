"""`build_encoder`: the shared functional backbone."""

import keras

from keras_encoder.layers import (
    SequencePooling,
    TokenAndPositionEmbedding,
    TransformerEncoderBlock,
)
from keras_encoder.models.config import EncoderConfig


def build_encoder(config: EncoderConfig, name="encoder"):
    """Build a Transformer encoder as a functional `keras.Model`.

    Input `token_ids`: int `(B, T)`, 0 = padding, `T <= config.max_length`.
    Outputs a dict: `sequence_output` `(B, T, D)` (carrying the padding mask
    as its Keras mask) and `pooled_output` `(B, D)`. The embedding layer is
    named `embedding` (followed by `embedding_norm` when
    `config.embedding_norm`), the blocks `block_0` ... `block_{L-1}`, and, for
    pre-norm models, the closing norm `final_norm`; `attention_probe`
    relies on these names.

    Args:
        config: `EncoderConfig`.
        name: string. Model name. Defaults to `"encoder"`.

    Returns:
        A `keras.Model`.
    """
    config.validate()
    rotary = config.position == "rotary"

    # === Layers ===
    embedding = TokenAndPositionEmbedding(
        vocabulary_size=config.vocabulary_size,
        sequence_length=config.max_length,
        hidden_dim=config.hidden_dim,
        position="none" if rotary else config.position,
        mask_zero=True,
        bigram_buckets=config.bigram_buckets,
        name="embedding",
    )
    embedding_norm = (
        keras.layers.LayerNormalization(
            epsilon=config.layer_norm_epsilon, name="embedding_norm"
        )
        if config.embedding_norm
        else None
    )
    embedding_dropout = keras.layers.Dropout(config.dropout, name="embedding_dropout")
    blocks = [
        TransformerEncoderBlock(
            num_heads=config.num_heads,
            intermediate_dim=config.intermediate_dim,
            dropout=config.dropout,
            activation=config.activation,
            norm_first=config.norm_first,
            layer_norm_epsilon=config.layer_norm_epsilon,
            use_rotary=rotary,
            name=f"block_{index}",
        )
        for index in range(config.num_layers)
    ]
    # Pre-norm blocks leave the residual stream unnormalized.
    final_norm = (
        keras.layers.LayerNormalization(
            epsilon=config.layer_norm_epsilon, name="final_norm"
        )
        if config.norm_first
        else None
    )
    pooling = SequencePooling(config.pooling, name="pooling")

    # === Functional Model ===
    token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    x = embedding(token_ids)  # (B, T, D)
    if embedding_norm is not None:
        x = embedding_norm(x)
    x = embedding_dropout(x)
    for block in blocks:
        x = block(x)
    if final_norm is not None:
        x = final_norm(x)
    pooled = pooling(x)  # (B, D)
    return keras.Model(
        inputs=token_ids,
        outputs={"sequence_output": x, "pooled_output": pooled},
        name=name,
    )
