"""SavedModel export: raw strings in, predictions out.

The exported directory carries the tokenizer's vocabulary table and the
model's weights. Loading it needs `tensorflow` and `import tensorflow_text`
(for the tokenizer ops) and nothing from this package:

    import tensorflow as tf, tensorflow_text  # noqa: F401
    serve = tf.saved_model.load("logs/reviews/export").signatures["serving_default"]
    serve(tf.constant(["这个手机很好用", ""]))["label"]
"""

import keras
import tensorflow as tf


def export_classifier(model, tokenizer, label_names, path):
    """Write a SavedModel whose `serving_default` classifies raw strings.

    The signature takes a 1-D `tf.string` tensor named `text` and returns
    `probabilities` float32 `(B, C)`, `label_id` int32 `(B,)` and `label`
    string `(B,)`. Empty strings and strings longer than the tokenizer's
    `sequence_length` are valid input (the latter are truncated, as in
    training). Each batch is padded only to its own longest sequence.

    Args:
        model: a classifier from `build_classifier` (logits output).
        tokenizer: the `keras_encoder.text.Tokenizer` used in training.
        label_names: list of class names, in class-id order.
        path: output directory.
    """
    labels = tf.constant(list(label_names), dtype=tf.string)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(text):
        token_ids = tokenizer.tokenize(text).to_tensor(default_value=tokenizer.pad_id)
        logits = model(token_ids, training=False)  # (B, C)
        probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
        label_id = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return {
            "probabilities": probabilities,
            "label_id": label_id,
            "label": tf.gather(labels, label_id),
        }

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(tokenizer)
    archive.add_endpoint("serving_default", serve)
    archive.write_out(str(path), verbose=False)
