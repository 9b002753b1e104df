"""`attention_probe`: attention maps of a trained model, same weights."""

import keras

from keras_encoder.layers import TokenAndPositionEmbedding, TransformerEncoderBlock


def attention_probe(model):
    """A model sharing `model`'s weights that returns every layer's attention.

    Re-runs the embedding and the encoder blocks of `model` (any model from
    `build_encoder` or a task builder) with `return_attention_scores=True`.
    The probe reuses the very layer objects, so it always shows the current
    weights and costs nothing while training; calling it is a separate,
    inference-only forward pass.

    Args:
        model: a `keras.Model` containing one `TokenAndPositionEmbedding`
            and its `TransformerEncoderBlock`s.

    Returns:
        An `AttentionProbe` (a `keras.Model`) from `token_ids` `(B, T)` to a
        dict
        `{block_name: scores}` with scores `(B, N, T, T)`, in block order.
    """
    layers = list(_walk(model))
    embeddings = [layer for layer in layers if isinstance(layer, TokenAndPositionEmbedding)]
    blocks = [layer for layer in layers if isinstance(layer, TransformerEncoderBlock)]
    if len(embeddings) != 1 or not blocks:
        raise ValueError(
            "attention_probe needs a model with one TokenAndPositionEmbedding "
            "and at least one TransformerEncoderBlock. Received: "
            f"model={model.name!r} with {len(embeddings)} embedding(s) and "
            f"{len(blocks)} block(s)"
        )
    norms = [layer for layer in layers if layer.name == "embedding_norm"]
    segments = [layer for layer in layers if layer.name == "segment_embedding"]
    return AttentionProbe(
        embeddings[0], blocks, embedding_norm=norms[0] if norms else None,
        segment_embedding=segments[0] if segments else None,
        name=f"{model.name}_attention_probe",
    )


class AttentionProbe(keras.Model):
    """Runs an embedding and its blocks, returning each block's attention.

    A subclassed model rather than a functional one: Keras records a layer's
    number of outputs from its first call, and the blocks were first called
    without scores.
    """

    def __init__(self, embedding, blocks, embedding_norm=None, segment_embedding=None, **kwargs):
        super().__init__(**kwargs)
        self.embedding = embedding
        self.embedding_norm = embedding_norm
        self.segment_embedding = segment_embedding
        self.blocks = list(blocks)

    def call(self, token_ids):
        x = self.embedding(token_ids)  # (B, T, D)
        if self.segment_embedding is not None:
            # A BERT-style backbone: one segment, padding is id 0.
            x = x + self.segment_embedding(keras.ops.zeros_like(token_ids))
        if self.embedding_norm is not None:
            x = self.embedding_norm(x)
        mask = self.embedding.compute_mask(token_ids)  # (B, T)
        if mask is None:
            mask = keras.ops.not_equal(token_ids, 0)
        scores = {}
        for block in self.blocks:
            x, block_scores = block(x, mask=mask, return_attention_scores=True)
            # The tokens' columns only: what a prefix (prefix tuning) takes
            # is the share a row is short of 1.
            scores[block.name] = block_scores[..., getattr(block, "prefix_length", 0):]
        return scores


def _walk(model):
    # Functional models list layers in topological order; nested models are
    # walked in place so block order is preserved.
    for layer in model.layers:
        if isinstance(layer, keras.Model) and not isinstance(
            layer, (TokenAndPositionEmbedding, TransformerEncoderBlock)
        ):
            yield from _walk(layer)
        else:
            yield layer
