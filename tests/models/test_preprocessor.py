"""`EncoderPreprocessor`: raw strings to padded ids, serialization, errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_encoder.models import EncoderPreprocessor
from keras_encoder.text import Tokenizer

TEXTS = ["这个手机很好用", "", "Mixed English 和中文", "好" * 100]


def test_ids_are_the_tokenizer_s_padded_with_zero(tokenizer):
    ids = EncoderPreprocessor(tokenizer)(TEXTS).numpy()
    assert ids.dtype == np.int32 and ids.shape == (4, tokenizer.sequence_length)
    np.testing.assert_array_equal(ids, tokenizer.tokenize(tf.constant(TEXTS)).to_tensor().numpy())
    assert ids[1].tolist() == [tokenizer.cls_id, tokenizer.sep_id] + [tokenizer.pad_id] * 14
    assert ids[3, 0] == tokenizer.cls_id and ids[3, -1] == tokenizer.sep_id  # cut to sequence_length
    # A batch is padded to its own longest row.
    assert EncoderPreprocessor(tokenizer)(["很好", "好"]).shape == (2, 4)


def test_any_batch_of_strings_and_inside_tf_data(tokenizer):
    preprocessor = EncoderPreprocessor(tokenizer)
    expected = preprocessor(TEXTS).numpy()
    for batch in (np.array(TEXTS), np.array(TEXTS, dtype=object), tf.constant(TEXTS)):
        np.testing.assert_array_equal(preprocessor(batch).numpy(), expected)
    (mapped,) = tf.data.Dataset.from_tensor_slices(TEXTS).batch(4).map(preprocessor)
    np.testing.assert_array_equal(mapped.numpy(), expected)


@pytest.mark.parametrize("unit", [None, "char", "word"])
def test_config_round_trip_gives_the_same_ids(unit, tokenizer):
    uncased = Tokenizer(list(tokenizer.vocabulary), sequence_length=8, lowercase=False)
    for original in (EncoderPreprocessor(tokenizer, unit=unit), EncoderPreprocessor(uncased, unit=unit)):
        for again in (
            EncoderPreprocessor.from_config(original.get_config()),
            keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(original)),
        ):
            assert isinstance(again, EncoderPreprocessor) and again.unit == unit
            assert again.tokenizer.vocabulary == original.tokenizer.vocabulary
            assert again.tokenizer.get_config() == original.tokenizer.get_config()
            np.testing.assert_array_equal(again(TEXTS).numpy(), original(TEXTS).numpy())


def test_bad_arguments_name_the_argument(tokenizer):
    with pytest.raises(ValueError, match="`tokenizer` must be a keras_encoder.text.Tokenizer"):
        EncoderPreprocessor("bert-base")
    with pytest.raises(ValueError, match="unit='chars'"):
        EncoderPreprocessor(tokenizer, unit="chars")
