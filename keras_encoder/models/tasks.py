"""Task models: a head on the shared backbone.

Each builder returns one flat functional model whose layers include the
backbone's (`embedding`, `block_0`, ...), so `attention_probe`, LoRA and
quantization see every layer directly.
"""

import warnings

import keras
import keras_hub

from keras_encoder.layers.crf import ChainCRF
from keras_encoder.layers.layer_utils import check_positive_int
from keras_encoder.layers.ngram import NgramFeatureScores
from keras_encoder.layers.window import WindowFeatureScores
from keras_encoder.models.backbone import build_encoder
from keras_encoder.models.config import EncoderConfig

# The masked-LM head gathers real positions only, so it drops the padding
# mask on purpose; Keras would warn about that on every trace.
warnings.filterwarnings(
    "ignore", message="Layer 'mlm_head' .* does not support masking", category=UserWarning
)


def _encoder_for(config, encoder):
    # A given encoder is reused layer by layer (its weights, e.g. from
    # masked-LM pretraining, come along); otherwise a fresh one is built.
    return build_encoder(config) if encoder is None else encoder


def build_classifier(
    config: EncoderConfig, num_classes, encoder=None, ngram_buckets=0, name="classifier"
):
    """Sentence classifier: pooled encoder output -> dropout -> logits.

    Input `token_ids` `(B, T)`; output `logits` `(B, num_classes)` (train
    with `from_logits=True`). Pass `encoder` (from `build_encoder`, e.g.
    after `build_masked_lm` pretraining) to fine-tune its weights.

    With `ngram_buckets > 0`, an `NgramFeatureScores` layer named
    `ngram_scores` adds linear class scores of the text's hashed token 1- to
    3-grams (a table of that many rows) to the encoder's logits.
    """
    check_positive_int("num_classes", num_classes)
    encoder = _encoder_for(config, encoder)
    # === Layers ===
    dropout = keras.layers.Dropout(config.dropout, name="head_dropout")
    head = keras.layers.Dense(num_classes, name="logits")
    ngrams = (
        NgramFeatureScores(num_classes, ngram_buckets, name="ngram_scores") if ngram_buckets else None
    )
    # === Functional Model ===
    pooled = encoder.output["pooled_output"]
    logits = head(dropout(pooled))
    if ngrams is not None:
        logits = keras.layers.Add(name="class_scores")([logits, ngrams(encoder.input)])
    return keras.Model(encoder.input, logits, name=name)


def build_token_classifier(
    config: EncoderConfig,
    num_tags,
    encoder=None,
    crf=False,
    allowed=None,
    window_buckets=0,
    window_scale=1.0,
    name="token_classifier",
):
    """Token tagger: per-token logits `(B, T, num_tags)` on the sequence output.

    The logits carry the padding mask as their Keras mask, so Keras losses
    and metrics count real tokens only. `encoder` as in `build_classifier`.

    With `crf=True` the logits go through a `ChainCRF` layer named `crf`
    (learned tag-transition scores; `allowed` as in `ChainCRF`): the output
    is unchanged, train with `ChainCRFLoss(model.get_layer("crf"))` and
    decode with Viterbi (`keras_encoder.data.pipeline.decode_tags`).

    With `window_buckets > 0`, a `WindowFeatureScores` layer named
    `window_scores` adds linear tag scores of hashed token-window features
    (a table of that many rows) to the encoder's logits; `window_scale` is
    its `scale` (a learning-rate multiplier for the table under AdamW).
    """
    check_positive_int("num_tags", num_tags)
    encoder = _encoder_for(config, encoder)
    # === Layers ===
    dropout = keras.layers.Dropout(config.dropout, name="head_dropout")
    head = keras.layers.Dense(num_tags, name="logits")
    chain = ChainCRF(num_tags, allowed=allowed, name="crf") if crf else None
    window = (
        WindowFeatureScores(num_tags, window_buckets, scale=window_scale, name="window_scores")
        if window_buckets
        else None
    )
    # === Functional Model ===
    sequence = encoder.output["sequence_output"]
    logits = head(dropout(sequence))
    if window is not None:
        logits = keras.layers.Add(name="tag_scores")([logits, window(encoder.input)])
    if chain is not None:
        logits = chain(logits)
    return keras.Model(encoder.input, logits, name=name)


def find_crf(model):
    """The model's `ChainCRF` layer, or None."""
    for layer in model.layers:
        if isinstance(layer, ChainCRF):
            return layer
    return None


def build_masked_lm(config: EncoderConfig, encoder=None, name="masked_lm"):
    """Masked-language-model pretraining head on the encoder (BERT-style).

    Inputs: a dict with `token_ids` `(B, T)` (some ids replaced by
    `[MASK]`) and `mask_positions` `(B, P)`; output: logits `(B, P, V)`
    over the vocabulary at those positions, from
    `keras_hub.layers.MaskedLMHead`. Train with `from_logits=True` and the
    mask generator's `mask_weights` as sample weights, then pass the same
    `encoder` to `build_classifier` to fine-tune.
    """
    encoder = _encoder_for(config, encoder)
    # === Layers ===
    head = keras_hub.layers.MaskedLMHead(
        vocabulary_size=config.vocabulary_size,
        intermediate_activation=config.activation,
        layer_norm_epsilon=config.layer_norm_epsilon,
        name="mlm_head",
    )
    # === Functional Model ===
    mask_positions = keras.Input(shape=(None,), dtype="int32", name="mask_positions")
    logits = head(encoder.output["sequence_output"], mask_positions=mask_positions)
    return keras.Model(
        {"token_ids": encoder.input, "mask_positions": mask_positions}, logits, name=name
    )
