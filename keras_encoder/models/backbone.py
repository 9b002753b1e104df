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

    Input `token_ids`: int `(B, T)`, 0 = padding, `T <= config.max_length`;
    with `config.segment_vocabulary_size > 0` (BERT-style), a dict of
    `token_ids`, `segment_ids` and `padding_mask` (1 for real tokens), each
    int `(B, T)`. Outputs a dict: `sequence_output` `(B, T, D)` (carrying the
    padding mask as its Keras mask when the ids carry it) and
    `pooled_output` `(B, D)`. The embedding layer is
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
    bert_style = config.segment_vocabulary_size > 0

    # === Layers ===
    embedding = TokenAndPositionEmbedding(
        vocabulary_size=config.vocabulary_size,
        sequence_length=config.max_length,
        hidden_dim=config.hidden_dim,
        position="none" if rotary else config.position,
        # BERT-style inputs carry their padding mask explicitly.
        mask_zero=not bert_style,
        bigram_buckets=config.bigram_buckets,
        name="embedding",
    )
    segment_embedding = (
        keras.layers.Embedding(config.segment_vocabulary_size, config.hidden_dim, name="segment_embedding")
        if bert_style
        else None
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
    pooler = (
        keras.layers.Dense(config.hidden_dim, activation="tanh", name="pooler") if config.pooler else None
    )

    # === Functional Model ===
    token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    x = embedding(token_ids)  # (B, T, D)
    padding_mask = None
    if bert_style:
        segment_ids = keras.Input(shape=(None,), dtype="int32", name="segment_ids")
        padding_input = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
        padding_mask = keras.ops.not_equal(padding_input, 0)  # (B, T) bool
        x = keras.layers.Add(name="embedding_sum")([x, segment_embedding(segment_ids)])
        inputs = {"token_ids": token_ids, "segment_ids": segment_ids, "padding_mask": padding_input}
    else:
        inputs = token_ids
    if embedding_norm is not None:
        x = embedding_norm(x)
    x = embedding_dropout(x)
    for block in blocks:
        x = block(x, padding_mask=padding_mask)
    if final_norm is not None:
        x = final_norm(x)
    if pooler is not None:
        pooled = pooler(x[:, 0, :])  # (B, D)
    else:
        pooled = pooling(x, padding_mask=padding_mask)  # (B, D)
    return keras.Model(
        inputs=inputs,
        outputs={"sequence_output": x, "pooled_output": pooled},
        name=name,
    )
