"""`EncoderTagger`: one tag per unit (character or word), with a CRF."""

import keras
import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text
from keras import ops

from keras_encoder.data.pipeline import chunk_pieces, first_piece_flags, with_special_tokens
from keras_encoder.export import tagger_serving, write_saved_model
from keras_encoder.layers.crf import ChainCRF
from keras_encoder.layers.layer_utils import check_positive_int
from keras_encoder.layers.window import WindowFeatureScores
from keras_encoder.models.task import EncoderTask, backbone_on_token_ids

SCHEMES = ("bio", "plain")
# A move that BIO forbids, in decoding: never taken.
_NEVER = -1e9


def bio_transitions(tag_names):
    """Which BIO tag may follow which: `(allowed (K, K) bool, start (K,) bool)`.

    `I-X` may only follow `B-X` or `I-X`, and may not start a sentence;
    every other move is allowed.
    """
    names = list(tag_names)
    allowed = np.ones((len(names), len(names)), dtype=bool)
    start = np.ones(len(names), dtype=bool)
    for current, tag in enumerate(names):
        if tag.startswith("I-"):
            start[current] = False
            for previous, before in enumerate(names):
                allowed[previous, current] = before in (f"B-{tag[2:]}", tag)
    return allowed, start


@keras.saving.register_keras_serializable(package="keras_encoder")
class EncoderTagger(EncoderTask):
    """A token tagger: the backbone's sequence output -> per-token tag scores.

    The model maps `token_ids` `(B, T)` to tag logits `(B, T, K)` (carrying
    the padding mask). Training batches are `(token_ids, tags, weights)`,
    the weights 1 at the first piece of each labelled unit and 0 elsewhere
    (`keras_encoder.data.pipeline.tagging_dataset`), so each unit counts
    once and padding, `[CLS]`/`[SEP]` and further pieces not at all.

    With `crf=True` (the default) a `ChainCRF` layer named `crf` learns
    tag-transition scores: `compute_loss` is the negative log-likelihood of
    the whole gold tag sequence, and decoding is Viterbi
    (`tensorflow_text.viterbi_constrained_sequence`) with those scores;
    for BIO tags decoding never takes a move BIO forbids (`I-X` after
    anything but `B-X`/`I-X`), with or without a CRF. Because the loss lives
    in the model rather than in a loss object, a tagger reloaded from
    `.keras` compiles and trains on.

    With `window_features > 0` a `WindowFeatureScores` layer named
    `window_scores` adds linear tag scores of hashed token-window features
    to the logits; `window_scale` multiplies its learning rate.

    `predict` and `export` read raw text: it is cut into units (characters
    for `unit="char"`, whitespace-separated words for `"word"`), each unit
    split into word-pieces, long sentences run in windows of the tokenizer's
    `sequence_length`, and each unit gets the tag at its first piece.

    Args:
        backbone: the functional encoder from `build_encoder`.
        tag_names: list of tag strings, in tag-id order.
        preprocessor: an `EncoderPreprocessor` (with its `unit`), or `None`.
        scheme: `"bio"` (tags are `O`/`B-X`/`I-X`, entities are spans) or
            `"plain"`. Defaults to `"plain"`.
        crf: bool. Defaults to `True`.
        window_features: int. Rows of the window table (0: none).
            Defaults to `0`.
        window_scale: float. The window table's learning-rate multiplier.
            Defaults to `1.0`.
        dropout: float. Dropout before the tag scores. Defaults to `0.1`.
        **kwargs: other keyword arguments of `keras.Model`.

    Example:

    ```python
    tagger = EncoderTagger(backbone, ["O", "B-PER", "I-PER"], EncoderPreprocessor(tokenizer, unit="char"),
                           scheme="bio")
    tagger.compile()
    tagger.fit(tagging_dataset(tagging_sequences(...), batch_size=32), epochs=3)
    tagger.predict(["江泽民在北京"])[0]["entities"]  # [("江泽民", "PER", 0, 3)]
    ```
    """

    def __init__(
        self,
        backbone,
        tag_names,
        preprocessor=None,
        scheme="plain",
        crf=True,
        window_features=0,
        window_scale=1.0,
        dropout=0.1,
        **kwargs,
    ):
        tag_names = [str(tag) for tag in tag_names]
        if not tag_names:
            raise ValueError("`tag_names` must hold at least one tag. Received: []")
        if scheme not in SCHEMES:
            raise ValueError(f"`scheme` must be 'bio' or 'plain'. Received: scheme={scheme!r}")
        # Checked here, so that the message names the tagger's arguments
        # rather than the window layer's `buckets` and `scale`.
        check_positive_int("window_features", window_features, allow_zero=True)
        number = isinstance(window_scale, (int, float)) and not isinstance(window_scale, bool)
        if not number or not 0 < window_scale < np.inf:
            raise ValueError(
                f"`window_scale` must be a positive finite number. Received: window_scale={window_scale!r}"
            )
        num_tags = len(tag_names)
        allowed = bio_transitions(tag_names)[0].tolist() if scheme == "bio" else None
        # === Layers ===
        head_dropout = keras.layers.Dropout(dropout, name="head_dropout")
        head = keras.layers.Dense(num_tags, name="logits")
        window = (
            WindowFeatureScores(num_tags, window_features, scale=window_scale, name="window_scores")
            if window_features
            else None
        )
        chain = ChainCRF(num_tags, allowed=allowed, name="crf") if crf else None
        # === Functional Model ===
        token_ids, backbone_outputs = backbone_on_token_ids(backbone)
        sequence = backbone_outputs["sequence_output"]  # (B, T, D)
        logits = head(head_dropout(sequence))  # (B, T, K)
        if window is not None:
            logits = keras.layers.Add(name="tag_scores")([logits, window(token_ids)])
        if chain is not None:
            logits = chain(logits)
        kwargs.setdefault("name", "tagger")
        super().__init__(inputs=token_ids, outputs=logits, **kwargs)
        # === Config ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.tag_names = tag_names
        self.scheme = scheme
        self.crf = crf
        self.window_features = window_features
        self.window_scale = window_scale
        self.dropout = dropout
        self._crf_layer = chain
        object.__setattr__(self, "_functions", {})  # traced functions: not model state

    def _drop_traced_functions(self):
        object.__setattr__(self, "_functions", {})

    @property
    def unit(self):
        """`"char"` or `"word"`: what the preprocessor cuts text into."""
        preprocessor = self.preprocessor
        return (preprocessor.unit if preprocessor is not None else None) or "char"

    def compile(self, optimizer="auto", loss="auto", weighted_metrics="auto", **kwargs):
        """Compile with the tagger's defaults.

        Args:
            optimizer: `"auto"` (AdamW at 1e-3) or any Keras optimizer.
            loss: `"auto"`: the CRF's negative log-likelihood (in
                `compute_loss`), or without a CRF token cross-entropy
                averaged over weighted units. Any Keras loss replaces it
                (and the CRF then only decodes).
            weighted_metrics: `"auto"`: accuracy over weighted units
                without a CRF (a CRF's prediction is the Viterbi path, not
                the per-token argmax, so none with it).
            **kwargs: other arguments of `keras.Model.compile`.
        """
        from keras_encoder.training.keras_metrics import WeightedTokenAccuracy

        if optimizer == "auto":
            optimizer = keras.optimizers.AdamW(1e-3)
        self._crf_loss = loss == "auto" and self._crf_layer is not None
        if loss == "auto":
            loss = None if self._crf_loss else keras.losses.SparseCategoricalCrossentropy(
                from_logits=True, reduction="mean_with_sample_weight"
            )
        if weighted_metrics == "auto":
            weighted_metrics = [] if self._crf_layer is not None else [WeightedTokenAccuracy(name="accuracy")]
        super().compile(optimizer=optimizer, loss=loss, weighted_metrics=weighted_metrics, **kwargs)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if not getattr(self, "_crf_loss", False):
            return super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
        weights = (
            ops.cast(ops.not_equal(x, 0), "float32") if sample_weight is None else ops.cast(sample_weight, "float32")
        )
        log_likelihood = self._crf_layer.log_likelihood(y_pred, y, weights)  # (B,)
        # Per labelled unit, so its scale matches a token cross-entropy.
        loss = -ops.sum(log_likelihood) / ops.maximum(ops.sum(ops.cast(weights > 0, "float32")), 1.0)
        for extra in self.losses:
            loss = loss + ops.cast(extra, "float32")
        return loss

    # === Decoding ===

    def unit_logits(self, pieces):
        """Per-unit tag logits, however long the sentence.

        Args:
            pieces: int32 `tf.RaggedTensor` `(B, U, P)` from
                `Tokenizer.tokenize_units`.

        Returns:
            float32 `tf.RaggedTensor` `(B, U, K)`: the logits at each
            unit's first piece, sentences cut into windows of the
            tokenizer's `sequence_length` as in training.
        """
        tokenizer = self._require_preprocessor("unit_logits").tokenizer
        chunks, _ = chunk_pieces(pieces, tokenizer.sequence_length - 2)
        token_ids = with_special_tokens(tokenizer, chunks).to_tensor(default_value=tokenizer.pad_id)
        logits = tf.cast(self(token_ids, training=False), tf.float32)  # (C, T, K)
        # Drop [CLS], [SEP] and padding; what is left is in sentence order.
        piece_logits = tf.RaggedTensor.from_tensor(logits[:, 1:], lengths=chunks.row_lengths()).values
        unit_logits = tf.boolean_mask(piece_logits, first_piece_flags(pieces).flat_values)
        return tf.RaggedTensor.from_row_splits(unit_logits, pieces.row_splits)

    def decode(self, logits):
        """Tag ids `(B, U)` from per-unit logits `(B, U, K)` (ragged).

        Viterbi over the CRF's learned scores, within what BIO allows; for
        BIO without a CRF, the valid sequence with the highest sum of
        per-unit log-probabilities; otherwise each unit's argmax.
        """
        num_tags = len(self.tag_names)
        if self._crf_layer is None and self.scheme != "bio":
            return logits.with_values(tf.argmax(logits.values, axis=-1, output_type=tf.int32))
        # (K + 1, K + 1): the last row holds start scores, the last column end scores.
        weights = np.zeros((num_tags + 1, num_tags + 1), "float32")
        allowed = np.ones((num_tags + 1, num_tags + 1), bool)
        if self.scheme == "bio":
            bio_allowed, bio_start = bio_transitions(self.tag_names)
            allowed[:num_tags, :num_tags] = bio_allowed
            allowed[num_tags, :num_tags] = bio_start
        weights = tf.constant(np.where(allowed, weights, _NEVER).astype("float32"))
        if self._crf_layer is None:
            scores = logits.with_values(tf.nn.log_softmax(logits.values, axis=-1))
        else:
            scores = logits
            transitions, start, end = (tf.convert_to_tensor(v) for v in self._crf_layer.decode_scores())
            learned = tf.concat(
                [tf.concat([transitions, end[:, None]], axis=1), tf.concat([start, [0.0]], axis=0)[None]],
                axis=0,
            )  # (K + 1, K + 1)
            weights = weights + learned
        path = tf_text.viterbi_constrained_sequence(
            scores, transition_weights=weights, use_log_space=True, use_start_and_end_states=True
        )
        # The op's output has no static shape; it has one id per unit.
        return tf.RaggedTensor.from_row_splits(
            tf.reshape(tf.cast(path.flat_values, tf.int32), [-1]), logits.row_splits, validate=False
        )

    def tag_units(self, sentences, batch_size=128):
        """Tags of sentences already cut into units, as in evaluation.

        Args:
            sentences: list of lists of unit strings.
            batch_size: int. Sentences per call.

        Returns:
            List of tag lists, aligned with `sentences`.
        """
        tag_ids = self._function("tag_ids")
        order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
        result = [None] * len(sentences)
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            flat = [unit for i in chosen for unit in sentences[i]]
            units = tf.RaggedTensor.from_row_lengths(
                tf.constant(flat, tf.string, shape=[len(flat)]),
                tf.constant([len(sentences[i]) for i in chosen], tf.int64),
            )
            for i, ids in zip(chosen, tag_ids(units).to_list()):
                result[i] = [self.tag_names[t] for t in ids]
        return result

    def _predict_text(self, batches):
        """Tags and entities for batches of raw strings.

        Returns one dict per text: `tokens` (the units), `tags`,
        `starts`/`ends` (character offsets), and for BIO tags `entities`, a
        list of `(text, type, start, end)`. `predict(texts)` returns this.
        """
        serve = self._function("serve")
        results = []
        for batch in batches:
            outputs = {key: value.numpy() for key, value in serve(tf.constant(batch, tf.string)).items()}
            for row in range(len(outputs["num_tokens"])):
                count = outputs["num_tokens"][row]
                item = {
                    "tokens": [t.decode("utf-8") for t in outputs["tokens"][row, :count]],
                    "tags": [t.decode("utf-8") for t in outputs["tags"][row, :count]],
                    "starts": outputs["token_start"][row, :count].tolist(),
                    "ends": outputs["token_end"][row, :count].tolist(),
                }
                if self.scheme == "bio":
                    entities = outputs["num_entities"][row]
                    item["entities"] = [
                        (
                            outputs["entity_text"][row, e].decode("utf-8"),
                            outputs["entity_type"][row, e].decode("utf-8"),
                            int(outputs["entity_start"][row, e]),
                            int(outputs["entity_end"][row, e]),
                        )
                        for e in range(entities)
                    ]
                results.append(item)
        return results

    def export(self, path):
        """Write a SavedModel whose `serving_default` tags raw strings.

        Outputs as in `keras_encoder.export.tagger_serving`: tokens, tags,
        tag probabilities and offsets, and for BIO tags the entities.
        """
        preprocessor = self._require_preprocessor("export")
        serve = tagger_serving(self._tag_fn, self.tag_names, scheme=self.scheme, unit=self.unit)
        write_saved_model(path, serve, self, preprocessor.tokenizer)

    def _tag_fn(self, units):
        tokenizer = self._require_preprocessor("predict").tokenizer
        logits = self.unit_logits(tokenizer.tokenize_units(units))
        return logits, self.decode(logits)

    def _function(self, kind):
        # Traced once per model; weights are read at call time, so the
        # functions see training progress.
        if kind not in self._functions:
            if kind == "serve":
                self._functions[kind] = tagger_serving(
                    self._tag_fn, self.tag_names, scheme=self.scheme, unit=self.unit
                )
            else:
                self._functions[kind] = tf.function(
                    lambda units: self._tag_fn(units)[1],
                    input_signature=[tf.RaggedTensorSpec([None, None], tf.string, ragged_rank=1)],
                    reduce_retracing=True,
                )
        return self._functions[kind]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "tag_names": self.tag_names,
                "scheme": self.scheme,
                "crf": self.crf,
                "window_features": self.window_features,
                "window_scale": self.window_scale,
                "dropout": self.dropout,
            }
        )
        return config
