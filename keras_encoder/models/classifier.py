"""`EncoderClassifier`: one label per text."""

import keras
import numpy as np
import tensorflow as tf

from keras_encoder.export import (
    SERVING_LENGTH_BOUNDS,
    SERVING_ROW_SIZES,
    classifier_serving,
    write_saved_model,
)
from keras_encoder.layers.layer_utils import check_positive_int
from keras_encoder.models.task import EncoderTask, backbone_on_token_ids


@keras.saving.register_keras_serializable(package="keras_encoder")
class EncoderClassifier(EncoderTask):
    """A text classifier: the backbone's pooled output -> dropout -> logits.

    The model maps `token_ids` `(B, T)` to class logits `(B, C)`; with a
    preprocessor it also reads raw strings in `fit`, `evaluate` and
    `predict`, and `export` writes a SavedModel that classifies raw strings.

    Args:
        backbone: the functional encoder from `build_encoder`.
        num_classes: int. Number of classes.
        preprocessor: an `EncoderPreprocessor`, or `None` to feed token ids.
        label_names: list of `num_classes` strings (what `predict` and the
            export return as `label`). Defaults to `"0"`, `"1"`, ...
        dropout: float. Dropout on the pooled vector. Defaults to `0.1`.
        **kwargs: other keyword arguments of `keras.Model`.

    Example:

    ```python
    tokenizer = Tokenizer.learn(texts, vocabulary_size=2000, sequence_length=64)
    backbone = build_encoder(EncoderConfig(vocabulary_size=tokenizer.vocabulary_size, max_length=64))
    classifier = EncoderClassifier(
        backbone, num_classes=2, preprocessor=EncoderPreprocessor(tokenizer),
        label_names=["negative", "positive"],
    )
    classifier.compile()  # AdamW, cross-entropy, accuracy
    classifier.fit(texts, labels, batch_size=32, epochs=2)
    classifier.predict(["这个手机很好用"])["label"]  # array(['positive'], dtype=object)
    classifier.export("export/")  # serving_default: strings -> probabilities, label_id, label
    ```
    """

    def __init__(
        self, backbone, num_classes, preprocessor=None, label_names=None, dropout=0.1, **kwargs
    ):
        check_positive_int("num_classes", num_classes)
        label_names = [str(i) for i in range(num_classes)] if label_names is None else list(label_names)
        if len(label_names) != num_classes:
            raise ValueError(
                f"`label_names` must hold num_classes={num_classes} names. "
                f"Received: {len(label_names)} names"
            )
        # === Layers ===
        head_dropout = keras.layers.Dropout(dropout, name="head_dropout")
        head = keras.layers.Dense(num_classes, name="logits")
        # === Functional Model ===
        token_ids, backbone_outputs = backbone_on_token_ids(backbone)
        pooled = backbone_outputs["pooled_output"]  # (B, D)
        logits = head(head_dropout(pooled))  # (B, C)
        kwargs.setdefault("name", "classifier")
        super().__init__(inputs=token_ids, outputs=logits, **kwargs)
        # === Config ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.num_classes = num_classes
        self.label_names = label_names
        self.dropout = dropout
        object.__setattr__(self, "_serve", None)  # traced function: not model state
        # A teacher (keras_encoder.compress.distill.attach_teacher): not model state.
        object.__setattr__(self, "_distillation", None)

    def _drop_traced_functions(self):
        object.__setattr__(self, "_serve", None)

    def compile(self, optimizer="auto", loss="auto", metrics="auto", **kwargs):
        """Compile with the classifier's defaults.

        Args:
            optimizer: `"auto"` (AdamW at 1e-3) or any Keras optimizer.
            loss: `"auto"` (sparse categorical cross-entropy from logits)
                or any Keras loss.
            metrics: `"auto"` (accuracy) or a list of Keras metrics.
            **kwargs: other arguments of `keras.Model.compile`.
        """
        if optimizer == "auto":
            optimizer = keras.optimizers.AdamW(1e-3)
        if loss == "auto":
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if metrics == "auto":
            metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The compiled loss; in training, with a teacher attached, the distillation loss."""
        loss = super().compute_loss(x, y, y_pred, sample_weight=sample_weight, training=training)
        if self._distillation is None or not training:
            return loss
        return self._distillation.loss(self, x, y_pred, loss)

    def _predict_text(self, batches):
        """Labels for batches of raw strings, as the export gives them.

        Returns a dict of NumPy arrays: `label` (str), `label_id` (int32)
        and `probabilities` `(B, C)`. `predict(texts)` returns this.
        """
        serve = self._serving(jit_compile=False)
        parts = [serve(tf.constant(batch, tf.string)) for batch in batches]
        if not parts:
            return {
                "label": np.zeros([0], object),
                "label_id": np.zeros([0], "int32"),
                "probabilities": np.zeros([0, self.num_classes], "float32"),
            }
        result = {key: np.concatenate([part[key].numpy() for part in parts]) for key in parts[0]}
        result["label"] = np.array([label.decode("utf-8") for label in result["label"]], dtype=object)
        return result

    def export(self, path, length_bounds=SERVING_LENGTH_BOUNDS, jit_compile=True, row_sizes=SERVING_ROW_SIZES):
        """Write a SavedModel whose `serving_default` classifies raw strings.

        Takes a 1-D `tf.string` tensor `text`; returns `probabilities`
        `(B, C)`, `label_id` `(B,)` and `label` `(B,)`. Loading it needs
        `tensorflow` and `import tensorflow_text`, nothing from this
        package. `length_bounds`, `jit_compile` and `row_sizes` as in
        `keras_encoder.export.classifier_serving`.
        """
        preprocessor = self._require_preprocessor("export")
        serve = classifier_serving(
            self, preprocessor.tokenizer, self.label_names,
            length_bounds=length_bounds, jit_compile=jit_compile, row_sizes=row_sizes,
        )
        write_saved_model(path, serve, self, preprocessor.tokenizer)

    def _serving(self, jit_compile):
        if self._serve is None:
            preprocessor = self._require_preprocessor("predict")
            serve = classifier_serving(
                self, preprocessor.tokenizer, self.label_names, jit_compile=jit_compile
            )
            object.__setattr__(self, "_serve", serve)
        return self._serve

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "label_names": self.label_names,
                "dropout": self.dropout,
            }
        )
        return config
