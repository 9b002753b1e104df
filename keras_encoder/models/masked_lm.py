"""`EncoderMaskedLM`: masked-language-model pretraining of a backbone."""

import warnings

import keras
import keras_hub
import tensorflow as tf

from keras_encoder.data.masking import check_mask_spans, mask_generator
from keras_encoder.models.task import EncoderTask, backbone_on_token_ids

# The head gathers the masked positions only, so it drops the padding
# mask on purpose; Keras would warn about that on every trace.
warnings.filterwarnings(
    "ignore", message="Layer 'mlm_head' .* does not support masking", category=UserWarning
)


@keras.saving.register_keras_serializable(package="keras_encoder")
class EncoderMaskedLM(EncoderTask):
    """Predicts masked tokens from their context (BERT's pretraining task).

    Inputs: a dict of `token_ids` `(B, T)` (some ids replaced by `[MASK]`,
    a random id or left as they are) and `mask_positions` `(B, P)`; output:
    logits `(B, P, V)` over the vocabulary at those positions, from
    `keras_hub.layers.MaskedLMHead`. Training batches are `(inputs,
    mask_ids, mask_weights)`; with a preprocessor, `fit` takes raw strings
    and draws the masks itself (`mask_rate` of the tokens, anew each epoch:
    80% `[MASK]`, 10% a random token, 10% unchanged; never padding,
    `[CLS]` or `[SEP]`). With `mask_spans` > 1 it masks spans of up to that
    many consecutive tokens instead of single tokens (MacBERT's n-gram
    masking: lengths 1-4 with probabilities 0.4, 0.3, 0.2, 0.1, truncated
    and renormalized), still `mask_rate` of the tokens on average, each
    span made `[MASK]`, random or kept as a whole
    (`keras_encoder.data.masking.SpanMaskGenerator`). The trained
    `backbone` then starts a classifier or tagger.

    Args:
        backbone: the functional encoder from `build_encoder`.
        preprocessor: an `EncoderPreprocessor`, or `None`.
        mask_rate: float. Share of tokens masked. Defaults to `0.15`.
        mask_spans: int. Longest span of consecutive tokens masked
            together, 1 to 4; 1 masks single tokens with keras-hub's
            `MaskedLMMaskGenerator`. Defaults to `1`.
        **kwargs: other keyword arguments of `keras.Model`.

    References:
     - [Devlin et al., 2019](https://arxiv.org/abs/1810.04805)
     - [Cui et al., 2020](https://arxiv.org/abs/2004.13922) (MacBERT)
    """

    def __init__(self, backbone, preprocessor=None, mask_rate=0.15, mask_spans=1, **kwargs):
        if not 0 < mask_rate < 1:
            raise ValueError(f"`mask_rate` must be in (0, 1). Received: mask_rate={mask_rate!r}")
        check_mask_spans(mask_spans)
        embedding = backbone.get_layer("embedding")
        # === Layers ===
        head = keras_hub.layers.MaskedLMHead(
            vocabulary_size=embedding.vocabulary_size,
            intermediate_activation="gelu",
            name="mlm_head",
        )
        # === Functional Model ===
        token_ids, backbone_outputs = backbone_on_token_ids(backbone)
        mask_positions = keras.Input(shape=(None,), dtype="int32", name="mask_positions")
        sequence = backbone_outputs["sequence_output"]  # (B, T, D)
        logits = head(sequence, mask_positions=mask_positions)  # (B, P, V)
        kwargs.setdefault("name", "masked_lm")
        super().__init__(
            inputs={"token_ids": token_ids, "mask_positions": mask_positions}, outputs=logits, **kwargs
        )
        # === Config ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.mask_rate = mask_rate
        self.mask_spans = mask_spans

    def compile(self, optimizer="auto", loss="auto", weighted_metrics="auto", **kwargs):
        """Compile with the masked LM's defaults: AdamW at 1e-3, and
        cross-entropy and accuracy averaged over the masked tokens only."""
        if optimizer == "auto":
            optimizer = keras.optimizers.AdamW(1e-3)
        if loss == "auto":
            loss = keras.losses.SparseCategoricalCrossentropy(
                from_logits=True, reduction="mean_with_sample_weight"
            )
        if weighted_metrics == "auto":
            weighted_metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        super().compile(optimizer=optimizer, loss=loss, weighted_metrics=weighted_metrics, **kwargs)

    def mask_generator(self):
        """The masks `fit` draws on raw text: keras-hub's
        `MaskedLMMaskGenerator` for `mask_spans=1`, else a `SpanMaskGenerator`."""
        tokenizer = self._require_preprocessor("mask_generator").tokenizer
        return mask_generator(tokenizer, self.mask_rate, self.mask_spans)

    def _text_batches(self, x, y=None, sample_weight=None, batch_size=None, shuffle=False):
        batches = super()._text_batches(x, None, None, batch_size, shuffle)
        if batches is None:
            return None
        generator = self.mask_generator()

        def mask(token_ids):
            masked = generator(token_ids)
            inputs = {"token_ids": masked["token_ids"], "mask_positions": masked["mask_positions"]}
            return inputs, masked["mask_ids"], masked["mask_weights"]

        return batches.map(mask, num_parallel_calls=tf.data.AUTOTUNE)

    def get_config(self):
        config = super().get_config()
        config.update({"mask_rate": self.mask_rate, "mask_spans": self.mask_spans})
        return config
