"""Training callbacks: pictures for TensorBoard, timing, weight swaps, adapter files.

The picture callbacks run after an epoch, outside the training step: the attention maps use
`attention_probe` (same weights, separate inference pass) on a handful of
fixed sentences, and the confusion matrix one pass over the validation set.
"""

import json
import os
import time

import keras
import numpy as np
import tensorflow as tf

from keras_encoder.distribute import is_multi_worker
from keras_encoder.errors import KerasEncoderError
from keras_encoder.models import attention_probe
from keras_encoder.training import plots
from keras_encoder.training.metrics import classification_report, confusion_matrix


class AttentionMapCallback(keras.callbacks.Callback):
    """Draws every layer's and head's attention on fixed sentences each epoch.

    Writes images tagged `attention/sentence_<i>/<block>` (one panel per
    head, tokens on both axes) and, once, the sentences as text, into
    `log_dir`. Put it before `keras.callbacks.TensorBoard` in the callback
    list so the images land with the epoch's scalars.

    Args:
        log_dir: string. Directory of the event file (e.g. `run/validation`).
        token_ids: list of 1-D int arrays, one per probe sentence.
        tokens: list of lists of token strings, aligned with `token_ids`.
    """

    def __init__(self, log_dir, token_ids, tokens):
        super().__init__()
        self.log_dir = log_dir
        self.token_ids = [np.asarray(ids, dtype="int32") for ids in token_ids]
        self.tokens = [list(sentence) for sentence in tokens]
        self._writer = None
        self._probe = None

    def on_train_begin(self, logs=None):
        self._writer = tf.summary.create_file_writer(self.log_dir)
        self._probe = attention_probe(self.model)
        with self._writer.as_default():
            for index, tokens in enumerate(self.tokens):
                labels = plots.tick_labels(tokens)
                legend = " ".join(
                    token if label == token else f"{label}:{token}"
                    for label, token in zip(labels, tokens)
                )
                tf.summary.text(f"attention/sentence_{index}/tokens", legend, step=0)

    def on_epoch_end(self, epoch, logs=None):
        with self._writer.as_default():
            for index, (ids, tokens) in enumerate(zip(self.token_ids, self.tokens)):
                scores = self._probe(ids[None], training=False)
                for block, block_scores in scores.items():
                    figure = plots.attention_figure(
                        keras.ops.convert_to_numpy(block_scores)[0],
                        tokens,
                        title=f"{block}, epoch {epoch + 1}",
                    )
                    tf.summary.image(
                        f"attention/sentence_{index}/{block}",
                        plots.figure_to_image(figure),
                        step=epoch,
                    )
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()


class ConfusionMatrixCallback(keras.callbacks.Callback):
    """Validation confusion matrix image and macro-F1, once per epoch.

    Adds `val_macro_f1` to the epoch logs, so `keras.callbacks.TensorBoard`
    (placed after this callback) plots it next to the loss, and writes the
    image tagged `confusion_matrix` into `log_dir`.

    Args:
        log_dir: string. Directory of the event file.
        dataset: `tf.data.Dataset` of `(token_ids, labels)` batches.
        label_names: list of class names.
    """

    def __init__(self, log_dir, dataset, label_names):
        super().__init__()
        self.log_dir = log_dir
        self.dataset = dataset
        self.label_names = list(label_names)
        self._writer = None

    def on_train_begin(self, logs=None):
        self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_epoch_end(self, epoch, logs=None):
        labels, predictions = predict_labels(self.model, self.dataset)
        matrix = confusion_matrix(labels, predictions, len(self.label_names))
        report = classification_report(matrix, self.label_names)
        if logs is not None:
            logs["val_macro_f1"] = report["macro_f1"]
        figure = plots.confusion_figure(
            matrix, self.label_names, title=f"validation, epoch {epoch + 1}"
        )
        with self._writer.as_default():
            tf.summary.image("confusion_matrix", plots.figure_to_image(figure), step=epoch)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()


def predict_labels(model, dataset):
    """True and predicted class ids over a `(token_ids, labels)` dataset."""
    predict = model.predict_on_batch
    if is_multi_worker(model.distribute_strategy):
        # predict_on_batch would run the whole batch on every worker and
        # gather the copies; each worker scores the set on its own instead.
        predict = tf.function(lambda token_ids: model(token_ids, training=False), reduce_retracing=True)
    labels, predictions = [], []
    for token_ids, batch_labels in dataset:
        logits = predict(token_ids)
        labels.append(np.asarray(batch_labels))
        predictions.append(np.argmax(logits, axis=-1))
    if not labels:
        return np.zeros(0, "int64"), np.zeros(0, "int64")
    return np.concatenate(labels), np.concatenate(predictions)


class TaggingMetricsCallback(keras.callbacks.Callback):
    """Validation tagging scores and a tag confusion matrix, once per epoch.

    Adds to the epoch logs (so `keras.callbacks.TensorBoard`, placed after
    this callback, plots them under `validation/`): `val_token_accuracy`
    and, for BIO tags, `val_entity_precision`, `val_entity_recall`,
    `val_entity_f1` and `val_entity_f1_<TYPE>` per entity type. Writes the
    image tagged `confusion_matrix` (rows true tag, columns predicted) into
    `log_dir`.

    Args:
        log_dir: string. Directory of the event file.
        units, tags: the validation sentences and their true tags.
        tag_names: list of tag strings.
        bio: bool. Whether the tags are BIO (adds entity scores).
    """

    def __init__(self, log_dir, units, tags, tag_names, bio):
        super().__init__()
        self.log_dir = log_dir
        self.units = units
        self.tags = tags
        self.tag_names = list(tag_names)
        self.bio = bio
        self._writer = None

    def on_train_begin(self, logs=None):
        self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_epoch_end(self, epoch, logs=None):
        from keras_encoder.training.metrics import tagging_report

        predicted = self.model.tag_units(self.units)  # an EncoderTagger
        report = tagging_report(self.tags, predicted, self.tag_names, self.bio)
        scores = {"val_token_accuracy": report["token_accuracy"]}
        if self.bio:
            for name in ("entity_precision", "entity_recall", "entity_f1"):
                scores[f"val_{name}"] = report[name]
            for kind, values in report["per_type"].items():
                scores[f"val_entity_f1_{kind}"] = values["f1"]
        if logs is not None:
            logs.update(scores)
        matrix = report["confusion_matrix"]
        figure = plots.confusion_figure(
            matrix, self.tag_names, title=f"validation tags, epoch {epoch + 1}", normalize=True
        )
        with self._writer.as_default():
            tf.summary.image("confusion_matrix", plots.figure_to_image(figure), step=epoch)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()


class EpochTimer(keras.callbacks.Callback):
    """Adds `seconds` to the epoch logs (TensorBoard: `epoch_seconds`)."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["seconds"] = time.perf_counter() - self._start


class RawWeightsBack(keras.callbacks.Callback):
    """Ends `keras.callbacks.SwapEMAWeights(swap_on_epoch=True)`'s swap early.

    `SwapEMAWeights` puts the averaged weights into the model at each
    epoch's end, for validation and the callbacks after it (scores,
    pictures, the best checkpoint), and swaps back at the next epoch's
    start. Placed before `keras.callbacks.BackupAndRestore`, this callback
    swaps back at once, so the backup holds the raw weights and the average
    and a resumed run continues exactly as an uninterrupted one would.
    Keras offers no public switch for this, so it calls the swap callback's
    own (private) swap; `tests/training/test_ema.py` pins the behaviour.

    Args:
        swap: the fit's `keras.callbacks.SwapEMAWeights`.
    """

    def __init__(self, swap):
        super().__init__()
        self.swap = swap

    def on_epoch_end(self, epoch, logs=None):
        if self.swap._ema_weights_in_model:
            self.swap._swap_variables()
            self.swap._ema_weights_in_model = False


class AdapterCheckpoints(keras.callbacks.Callback):
    """Saves the LoRA (or AdaLoRA) adapters and head after every epoch; puts them back on resume.

    `keras.callbacks.BackupAndRestore` saves weights with `save_weights`,
    which stores each adapted kernel with its update merged in and drops
    the adapter matrices; restored that way, the adapters come back as
    zeros and would never learn again. This callback keeps each epoch's
    adapters in `directory/adapters-<epoch>.safetensors` (a few hundred KB
    each) and, once `BackupAndRestore` has restored epoch `k`, takes the
    update back out of the kernels and reassigns epoch `k`'s adapters
    (`keras_encoder.adapters.restore_adapters`), so training goes on
    exactly where it stopped. The file of the best epoch is also the run's
    adapter file.

    Put this callback before `BackupAndRestore` in the callback list (an
    epoch's adapters are on disk before its weights backup) and
    `self.restorer()` after it. AdaLoRA adapters, whose weights files hold
    merged kernels too, are kept the same way with `save=save_adalora` and
    `restore=restore_adalora` (their masks travel in the file).

    Args:
        directory: string. Where the adapter files go.
        backup_dir: string. `BackupAndRestore`'s `backup_dir`.
        save: function `(model, path)` that writes the adapter file.
            Defaults to `keras_encoder.adapters.save_adapters`.
        restore: function `(model, path)` that puts the adapters back.
            Defaults to `keras_encoder.adapters.restore_adapters`.
    """

    def __init__(self, directory, backup_dir, save=None, restore=None):
        from keras_encoder.adapters import restore_adapters, save_adapters

        super().__init__()
        self.directory = directory
        self.backup_dir = backup_dir
        self.save = save or save_adapters
        self.restore = restore or restore_adapters

    def path(self, epoch):
        """The adapter file of `epoch` (1-based: after that many epochs)."""
        return os.path.join(self.directory, f"adapters-{epoch:03d}.safetensors")

    def on_epoch_end(self, epoch, logs=None):
        os.makedirs(self.directory, exist_ok=True)
        partial = self.path(epoch + 1) + ".partial"
        self.save(self.model, partial)
        os.replace(partial, self.path(epoch + 1))

    def restorer(self):
        """The callback that puts the adapters back after `BackupAndRestore`."""
        return _AdapterRestorer(self)


class _AdapterRestorer(keras.callbacks.Callback):
    def __init__(self, checkpoints):
        super().__init__()
        self.checkpoints = checkpoints

    def on_train_begin(self, logs=None):
        metadata = os.path.join(self.checkpoints.backup_dir, "training_metadata.json")
        if not os.path.exists(metadata):
            return  # a fresh start
        with open(metadata, encoding="utf-8") as handle:
            epoch = int(json.load(handle)["epoch"])
        if epoch == 0:
            return
        path = self.checkpoints.path(epoch)
        if not os.path.exists(path):
            raise KerasEncoderError(
                f"{path} is missing: the backup of epoch {epoch} cannot get its adapters "
                f"back. Delete {self.checkpoints.backup_dir} to start the run over."
            )
        self.checkpoints.restore(self.model, path)
