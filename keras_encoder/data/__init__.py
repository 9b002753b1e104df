"""Data for keras_encoder: built-in corpora, file readers, cleaning, splits."""

from keras_encoder.data.classification import BUILTIN_CORPORA
from keras_encoder.data.classification import TextClassificationData
from keras_encoder.data.classification import load_classification_data
from keras_encoder.data.classification import load_reviews
from keras_encoder.data.classification import read_labeled_file
from keras_encoder.data.classification import split_dataset
from keras_encoder.data.wordnet import load_wordnet_supersenses

__all__ = [
    "BUILTIN_CORPORA",
    "TextClassificationData",
    "load_classification_data",
    "load_reviews",
    "load_wordnet_supersenses",
    "read_labeled_file",
    "split_dataset",
]
