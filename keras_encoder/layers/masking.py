"""One place where the three kinds of attention mask are merged.

Shape legend: B batch, T query tokens, S key tokens.

Convention everywhere in this package: `True` (or 1) means "attend".
"""

from keras import ops


def merge_masks(padding_mask=None, attention_mask=None, keras_mask=None):
    """Combine padding, attention and Keras implicit masks into one.

    A padding mask `(B, S)` and a Keras implicit mask `(B, S)` (from
    `mask_zero=True`) both mark the keys that exist; they are broadcast over
    the queries. An attention mask `(B, T, S)` says which key each query may
    see. When several are given, a key is attended only if all of them allow
    it (logical AND).

    Padded *queries* are deliberately left unmasked: they still attend to the
    real keys, so every softmax row has at least one real key and no row is
    all-masked. Their outputs are ignored downstream (pooling and losses
    honour the mask).

    Args:
        padding_mask: bool or int tensor `(B, S)`, or `None`.
        attention_mask: bool or int tensor `(B, T, S)`, or `None`.
        keras_mask: bool tensor `(B, S)`, or `None`.

    Returns:
        A bool tensor `(B, 1, S)` or `(B, T, S)`, or `None` when no mask was
        given.
    """
    merged = None
    for name, key_mask in (
        ("padding_mask", padding_mask),
        ("keras_mask", keras_mask),
    ):
        if key_mask is None:
            continue
        if len(key_mask.shape) != 2:
            raise ValueError(
                f"`{name}` must have shape (batch, tokens). "
                f"Received: {name}.shape={key_mask.shape}"
            )
        key_mask = ops.cast(key_mask, "bool")[:, None, :]  # (B, 1, S)
        merged = key_mask if merged is None else ops.logical_and(merged, key_mask)
    if attention_mask is not None:
        if len(attention_mask.shape) != 3:
            raise ValueError(
                "`attention_mask` must have shape (batch, tokens, tokens). "
                f"Received: attention_mask.shape={attention_mask.shape}"
            )
        attention_mask = ops.cast(attention_mask, "bool")  # (B, T, S)
        merged = (
            attention_mask
            if merged is None
            else ops.logical_and(merged, attention_mask)
        )
    return merged
