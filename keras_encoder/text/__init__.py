"""Text: the WordPiece tokenizer, vocabulary learning, save and load."""

from keras_encoder.text.tokenizer import RESERVED_TOKENS
from keras_encoder.text.tokenizer import Tokenizer

__all__ = ["RESERVED_TOKENS", "Tokenizer"]
