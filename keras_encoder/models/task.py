"""`EncoderTask`: what every task model shares (backbone, preprocessor, presets)."""

import os

import keras
import numpy as np
import tensorflow as tf

from keras_encoder.distribute import multi_worker_logs, zeros_like_spec
from keras_encoder.errors import ConfigError


class EncoderTask(keras.Model):
    """Base class of the task models: a functional head on a backbone.

    A task model is a functional `keras.Model` from the backbone's
    `token_ids` to the task's outputs, and it owns the rest of the task:
    its `preprocessor` (an `EncoderPreprocessor`: raw strings to token
    ids), its `compile()` defaults, its loss, what `predict` returns for
    raw text, and `export(path)`, a SavedModel that takes raw strings.

    `fit`, `evaluate` and `predict` take raw strings when the model has a
    preprocessor (a list, a NumPy array of `str`, or a `tf.data.Dataset`
    of strings); anything else (token ids, a dataset of token-id batches)
    goes to Keras as it is.
    """

    @property
    def backbone(self):
        """The functional encoder (`build_encoder`) this task wraps."""
        return self._backbone

    @backbone.setter
    def backbone(self, value):
        self._backbone = value

    @property
    def preprocessor(self):
        """The `EncoderPreprocessor`, or `None`."""
        return self._preprocessor

    @preprocessor.setter
    def preprocessor(self, value):
        self._preprocessor = value

    def _require_preprocessor(self, what):
        if self.preprocessor is None:
            raise ValueError(
                f"{type(self).__name__}.{what} needs a preprocessor (the tokenizer) to read raw "
                "text; pass `preprocessor=EncoderPreprocessor(tokenizer)` when building the model."
            )
        return self.preprocessor

    def _text_batches(self, x, y=None, sample_weight=None, batch_size=None, shuffle=False):
        """Raw strings to a dataset of preprocessed batches (or `None` if `x` is not text)."""
        if not _is_text(x):
            return None
        preprocessor = self._require_preprocessor("fit/evaluate")
        if isinstance(x, tf.data.Dataset):
            dataset = x
        else:
            parts = tuple(
                part for part in (np.asarray(text_list(x), dtype=str), y, sample_weight)
                if part is not None
            )
            dataset = tf.data.Dataset.from_tensor_slices(parts if len(parts) > 1 else parts[0])
            if shuffle:
                dataset = dataset.shuffle(len(x), reshuffle_each_iteration=True)
            dataset = dataset.batch(batch_size or 32)

        def preprocess(text, *rest):
            return (preprocessor(text), *rest)

        return dataset.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    def fit(self, x=None, y=None, batch_size=None, validation_data=None, shuffle=None, **kwargs):
        sample_weight = kwargs.pop("sample_weight", None)
        dataset = self._text_batches(x, y, sample_weight, batch_size, shuffle is not False)
        if validation_data is not None and _is_text(validation_data[0] if isinstance(validation_data, tuple) else validation_data):
            validation_data = self._text_batches(*_unpack(validation_data), batch_size=batch_size)
        if dataset is None:
            if shuffle is not None:
                kwargs["shuffle"] = shuffle
            elif isinstance(x, tf.data.Dataset):
                kwargs["shuffle"] = False  # a dataset shuffles itself
            return super().fit(
                x, y, batch_size=batch_size, validation_data=validation_data,
                sample_weight=sample_weight, **kwargs,
            )
        return super().fit(dataset, validation_data=validation_data, shuffle=False, **kwargs)

    def evaluate(self, x=None, y=None, batch_size=None, **kwargs):
        sample_weight = kwargs.pop("sample_weight", None)
        dataset = self._text_batches(x, y, sample_weight, batch_size)
        if dataset is None:
            return super().evaluate(x, y, batch_size=batch_size, sample_weight=sample_weight, **kwargs)
        return super().evaluate(dataset, **kwargs)

    def predict(self, x, batch_size=None, **kwargs):
        """Predictions for raw strings, or the outputs for token ids.

        Args:
            x: raw strings (a list, an array or a `tf.string` tensor), or
                token ids / a dataset of them.
            batch_size: int. Texts per call. Defaults to 32.

        Returns:
            For raw strings, what the task's export returns (for a
            classifier a dict of `label`, `label_id`, `probabilities`; for a
            tagger one dict of tokens, tags, offsets and entities per text);
            otherwise the model's outputs, as `keras.Model.predict`.
        """
        empty = isinstance(x, (list, tuple)) and not x  # no texts: nothing to run
        if not empty and (not _is_text(x) or isinstance(x, tf.data.Dataset)):
            return super().predict(x, batch_size=batch_size, **kwargs)
        texts = text_list(x)
        size = batch_size or 32
        return self._predict_text([texts[start : start + size] for start in range(0, len(texts), size)])

    def quantize(self, mode=None, **kwargs):
        """`keras.Model.quantize`, and the traced prediction functions dropped.

        `predict` on raw strings keeps traced functions that hold the
        weights they were traced with; quantizing replaces those weights.
        """
        super().quantize(mode, **kwargs)
        self._drop_traced_functions()

    def _drop_traced_functions(self):
        """Forget the functions traced for `predict` on raw strings."""

    # === Multi-worker training (keras_encoder.distribute explains why) ===
    # The TensorFlow trainer's methods; other backends keep their own.

    if keras.backend.backend() == "tensorflow":

        def train_step(self, data):
            return multi_worker_logs(self.distribute_strategy, super().train_step(data))

        def test_step(self, data):
            return multi_worker_logs(self.distribute_strategy, super().test_step(data))

        def _maybe_symbolic_build(self, iterator=None, data_batch=None):
            if iterator is not None and self._distribute_strategy is not None:
                # Keras would draw a batch from a fresh pass over the data, which
                # fails on several workers (it reduces the batch) and, for a
                # dataset that reshuffles each pass, shifts every epoch's order
                # by one against a run without a strategy. A batch of zeros of
                # the data's shapes builds the same.
                data_batch = zeros_like_spec(iterator.data_adapter.get_tf_dataset().element_spec)
                iterator = None
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def compile_from_config(self, config):
        # A `.keras` file stores what `compile()` resolved its "auto"
        # arguments to; a loss of None is the tagger's CRF loss, which
        # lives in `compute_loss`, so it comes back as "auto".
        # train.py compiles with keras_encoder's AdamW: registered on import.
        import keras_encoder.training.optimizer  # noqa: F401

        config = keras.saving.deserialize_keras_object(config)
        if config.get("loss") is None:
            config["loss"] = "auto"
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def get_config(self):
        return {
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "preprocessor": keras.saving.serialize_keras_object(self.preprocessor),
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("backbone", "preprocessor"):
            if isinstance(config.get(key), dict):
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)

    @classmethod
    def from_preset(cls, preset, **kwargs):
        """A task model from a trained run or from a pretrained checkpoint.

        Args:
            preset: string. A run directory of `python train.py`
                (`logs/<run>`, holding `model.keras`) or a `.keras` file:
                the trained model comes back as it was; a pretraining run
                (`--task pretrain`) gives a new head on its backbone. Or a Hugging Face
                BERT directory (`config.json`, `model.safetensors`,
                `vocab.txt`): a new head on the pretrained backbone, with
                the checkpoint's tokenizer as the preprocessor.
            **kwargs: for a checkpoint or a pretraining run, the task's arguments (for example
                `num_classes=` and `label_names=` for a classifier,
                `tag_names=` and `scheme=` for a tagger), plus
                `sequence_length=` (default 128) and, for a tagger,
                `unit=` (`"char"` or `"word"`).

        Returns:
            The model, with its preprocessor.
        """
        from keras_encoder.checkpoints import WEIGHTS_FILE, load_pretrained
        from keras_encoder.models.preprocessor import EncoderPreprocessor

        if os.path.isfile(os.path.join(preset, WEIGHTS_FILE)):
            sequence_length = kwargs.pop("sequence_length", 128)
            unit = kwargs.pop("unit", None)
            backbone, tokenizer = load_pretrained(preset, sequence_length=sequence_length)
            return cls(backbone=backbone, preprocessor=EncoderPreprocessor(tokenizer, unit=unit), **kwargs)
        path = os.path.join(preset, "model.keras") if os.path.isdir(preset) else preset
        if not os.path.isfile(path):
            raise ConfigError(
                f"{preset}: no model.keras or {WEIGHTS_FILE} here. Give a finished run directory "
                "(logs/<run>/, written by python train.py), a .keras file or a BERT checkpoint."
            )
        model = keras.models.load_model(path)
        if type(model).__name__ == "EncoderMaskedLM" and cls is not type(model):
            # A pretraining run: a new head on its backbone, as for a checkpoint.
            from keras_encoder.checkpoints import tokenizer_of_length

            tokenizer = model.preprocessor.tokenizer
            tokenizer = tokenizer_of_length(tokenizer, kwargs.pop("sequence_length", tokenizer.sequence_length))
            unit = kwargs.pop("unit", None)
            return cls(backbone=model.backbone, preprocessor=EncoderPreprocessor(tokenizer, unit=unit), **kwargs)
        if kwargs:
            raise ConfigError(
                f"{cls.__name__}.from_preset({preset!r}) takes no other arguments for a "
                f"trained model. Received: {', '.join(sorted(kwargs))}"
            )
        if not isinstance(model, cls):
            raise ConfigError(
                f"{path} holds a {type(model).__name__}, not a {cls.__name__}."
            )
        return model


def backbone_on_token_ids(backbone):
    """`(token_ids, outputs)`: the task's `token_ids` input and the backbone's outputs on it.

    A backbone that takes `token_ids` alone is called on its own input. A
    BERT-style backbone (a dict of `token_ids`, `segment_ids` and
    `padding_mask`) is fed from `token_ids` alone: every token is in
    segment 0 and the padding mask is `token_ids != 0` (BERT vocabularies
    put `[PAD]` at 0, as ours do). So every task model takes `(B, T)` token
    ids, whatever its backbone, and the data pipelines, the windowed
    tagging and the exports work unchanged.
    """
    if not isinstance(backbone.input, dict):
        return backbone.input, backbone(backbone.input)
    token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    padding_mask = keras.ops.cast(keras.ops.not_equal(token_ids, 0), "int32")
    segment_ids = keras.ops.zeros_like(token_ids)
    outputs = backbone({"token_ids": token_ids, "segment_ids": segment_ids, "padding_mask": padding_mask})
    return token_ids, outputs


def _is_text(x):
    if isinstance(x, tf.data.Dataset):
        spec = x.element_spec
        first = spec[0] if isinstance(spec, tuple) else spec
        return isinstance(first, tf.TensorSpec) and first.dtype == tf.string
    if isinstance(x, str):
        return True
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], str):
        return True
    if isinstance(x, np.ndarray) and x.dtype.kind in "UO" and x.size and isinstance(x.flat[0], str):
        return True
    return isinstance(x, tf.Tensor) and x.dtype == tf.string


def _unpack(data):
    if isinstance(data, tuple):
        return data
    return (data,)


def text_list(texts):
    """A 1-D list of `str` from a string, a list, an array or a tensor."""
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, tf.Tensor):
        texts = texts.numpy()
    return [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in np.asarray(texts, dtype=object).ravel()]
