"""WordPiece tokenizer for Chinese and space-separated text."""

import collections
import json
import os

import tensorflow as tf
import tensorflow_text as tf_text

from keras_encoder.errors import ConfigError
from keras_encoder.errors import DataError

RESERVED_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# "nfkc": case folding with NFKC (full-width letters and ligatures become
# plain ones), for vocabularies learned here; "bert": exactly Hugging
# Face's BertNormalizer, for BERT checkpoints' vocabularies.
NORMALIZATIONS = ("nfkc", "bert")

VOCABULARY_FILE = "vocab.txt"
CONFIG_FILE = "tokenizer.json"

SUFFIX_INDICATOR = "##"
# Longer "words" (a URL, a run of digits) become one [UNK] instead of being
# searched piece by piece.
MAX_BYTES_PER_WORD = 100

# Word splitting of BERT's BasicTokenizer: whitespace separates words and is
# dropped; each ASCII or Unicode punctuation mark and each CJK ideograph is a
# word of its own.
# RE2's \s is ASCII only; \p{Z} adds the ideographic and no-break spaces.
_WHITESPACE = r"[\s\p{Z}]+"
_PUNCTUATION = r"[!-/]|[:-@]|[\[-`]|[{-~]|[\p{P}]"
_CJK = "|".join(
    [
        r"[\x{4E00}-\x{9FFF}]",
        r"[\x{3400}-\x{4DBF}]",
        r"[\x{20000}-\x{2A6DF}]",
        r"[\x{2A700}-\x{2B73F}]",
        r"[\x{2B740}-\x{2B81F}]",
        r"[\x{2B820}-\x{2CEAF}]",
        r"[\x{F900}-\x{FAFF}]",
        r"[\x{2F800}-\x{2FA1F}]",
    ]
)
_KEEP_DELIMITERS = f"{_PUNCTUATION}|{_CJK}"
_DELIMITERS = f"{_WHITESPACE}|{_KEEP_DELIMITERS}"


class Tokenizer(tf.Module):
    """WordPiece tokenizer for Chinese and space-separated languages.

    Text is first split into words the way BERT does it: optional lower
    casing (Unicode case folding, then accents stripped), control characters
    replaced by spaces, whitespace dropped, and every punctuation mark and
    every CJK ideograph made a word of its own. So Chinese becomes one token
    per character, while other words are split greedily into the longest
    vocabulary pieces, continuation pieces carrying a `"##"` prefix
    (`"tokenizer"` -> `"token", "##izer"`). A word that cannot be spelled
    from the vocabulary, or is longer than 100 bytes, becomes `[UNK]`.

    Every sequence is `[CLS] word-pieces [SEP]`, the word-pieces truncated so
    that the whole is at most `sequence_length` ids. Ids of the reserved
    tokens are fixed: `[PAD]`=0, `[UNK]`=1, `[CLS]`=2, `[SEP]`=3,
    `[MASK]`=4, so `0` is padding everywhere (`mask_zero=True`).

    `tokenize` is pure TensorFlow: it runs inside `tf.data.Dataset.map` and
    inside a `tf.function` of an exported SavedModel, which then needs only
    `import tensorflow_text` to load. The vocabulary table is a tracked
    resource of this module.

    Args:
        vocabulary: list of str. The tokens; a token's position is its
            id. It holds `RESERVED_TOKENS`, `[PAD]` first (learned
            vocabularies begin with all five; BERT's `vocab.txt` has the
            others further on). Continuation
            pieces start with `"##"`.
        sequence_length: int. The maximum number of ids per sequence,
            `[CLS]` and `[SEP]` included; at least 3. Defaults to `128`.
        lowercase: bool. Whether to case-fold and strip accents before
            splitting; must match how the vocabulary was learned. Defaults
            to `True`.

    Call arguments:
        strings: a scalar `tf.string` (gives a 1-D int32 tensor) or a 1-D
            batch of strings (gives an int32 `tf.RaggedTensor` `(B, None)`).

    Example:

    ```python
    tokenizer = Tokenizer(RESERVED_TOKENS + ["好", "书", "read", "##ing"])
    tokenizer.tokens("好书 Reading!")
    # ['[CLS]', '好', '书', 'read', '##ing', '[UNK]', '[SEP]']
    tokenizer(tf.constant(["好书", ""]))
    # <tf.RaggedTensor [[2, 5, 6, 3], [2, 3]]>
    tokenizer.tokenize_to_dense(tf.constant(["好书"]))  # int32 (1, 128)

    tokenizer = Tokenizer.learn(texts, vocabulary_size=8000)
    tokenizer.save("logs/run")  # vocab.txt, tokenizer.json
    tokenizer = Tokenizer.load("logs/run")
    ```

    References:
     - [Devlin et al., 2019](https://arxiv.org/abs/1810.04805)
     - [Wu et al., 2016](https://arxiv.org/abs/1609.08144)
    """

    def __init__(self, vocabulary, sequence_length=128, lowercase=True, normalization="nfkc"):
        _check_vocabulary(vocabulary)
        if normalization not in NORMALIZATIONS:
            raise ConfigError(
                f"`normalization` must be one of {', '.join(NORMALIZATIONS)}. "
                f"Received: normalization={normalization!r}"
            )
        if (
            isinstance(sequence_length, bool)
            or not isinstance(sequence_length, int)
            or sequence_length < 3
        ):
            raise ConfigError(
                "`sequence_length` must be an integer of at least 3, room for "
                f"[CLS], one token and [SEP]. Received: "
                f"sequence_length={sequence_length!r}"
            )
        if not isinstance(lowercase, bool):
            raise ConfigError(
                f"`lowercase` must be True or False. Received: "
                f"lowercase={lowercase!r}"
            )
        super().__init__(name="tokenizer")
        # Python-side copy for `id_to_token`; the graph (and a SavedModel)
        # reads the vocabulary from the table below.
        self._vocabulary = tuple(vocabulary)
        # Our vocabularies start with RESERVED_TOKENS; BERT's put [UNK],
        # [CLS], [SEP] and [MASK] after unused slots (ids 100 to 103).
        self._special = {token: self._vocabulary.index(token) for token in RESERVED_TOKENS}
        self._sequence_length = sequence_length
        self._lowercase = lowercase
        self._normalization = normalization
        self._table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                keys=tf.constant(self._vocabulary, tf.string),
                values=tf.range(len(self._vocabulary), dtype=tf.int64),
            ),
            default_value=self.unk_id,
        )
        self._wordpiece = tf_text.WordpieceTokenizer(
            self._table,
            suffix_indicator=SUFFIX_INDICATOR,
            # BERT's limit is 100 characters, checked in split_words.
            max_bytes_per_word=MAX_BYTES_PER_WORD if normalization == "nfkc" else 4 * MAX_BYTES_PER_WORD,
            token_out_type=tf.int64,
            unknown_token="[UNK]",
        )

    @property
    def vocabulary(self):
        return list(self._vocabulary)

    @property
    def vocabulary_size(self):
        return len(self._vocabulary)

    @property
    def sequence_length(self):
        return self._sequence_length

    @property
    def lowercase(self):
        return self._lowercase

    @property
    def pad_id(self):
        return self._special["[PAD]"]

    @property
    def unk_id(self):
        return self._special["[UNK]"]

    @property
    def cls_id(self):
        return self._special["[CLS]"]

    @property
    def sep_id(self):
        return self._special["[SEP]"]

    @property
    def mask_id(self):
        return self._special["[MASK]"]

    @property
    def first_regular_id(self):
        """Ids below this are padding and special tokens (and, in BERT's
        vocabularies, the unused slots between them)."""
        return max(self._special.values()) + 1

    # === Graph side ===

    def split_words(self, strings):
        """Splits a 1-D batch of strings into words: ragged `(B, None)`."""
        if self._normalization == "bert":
            return self._split_words_as_bert(strings)
        if self._lowercase:
            strings = tf_text.case_fold_utf8(strings)
            strings = tf_text.normalize_utf8(strings, "NFD")
            strings = tf.strings.regex_replace(strings, r"\p{Mn}", "")
        strings = tf.strings.regex_replace(strings, r"\p{Cc}|\p{Cf}", " ")
        return tf_text.regex_split(strings, _DELIMITERS, _KEEP_DELIMITERS)

    def _split_words_as_bert(self, strings):
        # Hugging Face's BertNormalizer, step by step: tabs and line breaks
        # are spaces; other control and format characters, NUL and U+FFFD
        # are removed; accents are stripped (NFD, then marks dropped) before
        # lower-casing, which is plain per-character lower case (no NFKC,
        # so full-width letters and ligatures stay as they are).
        strings = tf.strings.regex_replace(strings, r"[\t\n\r]", " ")
        strings = tf.strings.regex_replace(strings, r"\p{C}|\x{FFFD}", "")
        if self._lowercase:
            strings = tf_text.normalize_utf8(strings, "NFD")
            strings = tf.strings.regex_replace(strings, r"\p{Mn}", "")
            strings = tf.strings.lower(strings, encoding="utf-8")
        words = tf_text.regex_split(strings, _DELIMITERS, _KEEP_DELIMITERS)
        # A word of over 100 characters is one [UNK], as in BERT.
        too_long = tf.strings.length(words.flat_values, unit="UTF8_CHAR") > MAX_BYTES_PER_WORD
        return words.with_flat_values(tf.where(too_long, "[UNK]", words.flat_values))

    def tokenize(self, strings):
        """`[CLS] word-pieces [SEP]` ids, int32, at most `sequence_length`."""
        strings = tf.convert_to_tensor(strings, dtype=tf.string)
        if strings.shape.rank == 0:
            return self.tokenize(strings[tf.newaxis])[0]
        if strings.shape.rank != 1:
            raise ValueError(
                "`strings` must be a scalar or a 1-D batch of strings. "
                f"Received: strings.shape={strings.shape}"
            )
        words = self.split_words(strings)  # (B, words)
        pieces = self._wordpiece.tokenize(words)  # (B, words, pieces)
        pieces = pieces.merge_dims(1, 2)  # (B, pieces)
        pieces = tf.cast(pieces[:, : self._sequence_length - 2], tf.int32)
        batch_size = pieces.nrows()
        cls = tf.fill([batch_size, 1], tf.constant(self.cls_id, tf.int32))
        sep = tf.fill([batch_size, 1], tf.constant(self.sep_id, tf.int32))
        return tf.concat([cls, pieces, sep], axis=1)  # (B, None)

    __call__ = tokenize

    def tokenize_units(self, units):
        """Word-piece ids of pre-split units, for tagging.

        Args:
            units: `tf.string` `tf.RaggedTensor` `(B, U)`: each sentence's
                labelled units (characters or words).

        Returns:
            int32 `tf.RaggedTensor` `(B, U, P)`: every unit's pieces, no
            `[CLS]`/`[SEP]`, nothing truncated. Every unit has at least one
            piece (`[UNK]` for a unit that splits into nothing, such as a
            control character), so its first piece can carry its tag.
        """
        flat = units.values  # (N,)
        words = self.split_words(flat)  # (N, W)
        pieces = tf.cast(self._wordpiece.tokenize(words).merge_dims(1, 2), tf.int32)  # (N, P)
        empty = tf.cast(tf.equal(pieces.row_lengths(), 0), tf.int64)
        unknown = tf.RaggedTensor.from_row_lengths(
            tf.fill([tf.reduce_sum(empty)], tf.constant(self.unk_id, tf.int32)), empty
        )
        pieces = tf.concat([pieces, unknown], axis=1)
        return units.with_values(pieces)

    def tokenize_to_dense(self, strings):
        """`tokenize`, padded with `pad_id`: int32 `(B, sequence_length)`."""
        strings = tf.convert_to_tensor(strings, dtype=tf.string)
        if strings.shape.rank == 0:
            return self.tokenize_to_dense(strings[tf.newaxis])[0]
        return self.tokenize(strings).to_tensor(
            default_value=self.pad_id, shape=[None, self._sequence_length]
        )

    # === Python side ===

    def id_to_token(self, ids):
        """The token strings of `ids` (an int, a list, an array or a tensor)."""
        if isinstance(ids, (tf.Tensor, tf.RaggedTensor)):
            ids = ids.numpy()
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        if isinstance(ids, int):
            ids = [ids]
        return [self._vocabulary[int(i)] for i in ids]

    def tokens(self, text):
        """The token strings of one text, `[CLS]` and `[SEP]` included."""
        return self.id_to_token(self.tokenize(tf.constant(text, tf.string)))

    # === Vocabulary learning ===

    @classmethod
    def learn(
        cls, texts, vocabulary_size=8000, sequence_length=128, lowercase=True
    ):
        """Learns a WordPiece vocabulary from `texts` and returns a Tokenizer.

        Words are split exactly as `tokenize` splits them, then
        `keras_hub.tokenizers.compute_word_piece_vocabulary` learns the
        pieces. Its learner keeps only the 1,000 most frequent characters,
        and adds a `"##"` twin of each. CJK ideographs and punctuation are
        always words of their own, so their twins are never produced: they
        are dropped, and the room left under `vocabulary_size` goes to the
        most frequent single characters still missing. Without this, about
        5% of the characters of Chinese reviews would be `[UNK]`.

        Args:
            texts: list of str, or a `tf.data.Dataset` of scalar or 1-D
                `tf.string`. The training text.
            vocabulary_size: int. The maximum number of tokens, reserved
                ones included. Defaults to `8000`.
            sequence_length: int. Passed to the Tokenizer. Defaults to `128`.
            lowercase: bool. Passed to the Tokenizer. Defaults to `True`.

        Returns:
            A `Tokenizer` whose vocabulary starts with `RESERVED_TOKENS`.
        """
        # Imported here so that loading a tokenizer, or a SavedModel built
        # from one, does not need keras-hub.
        from keras_hub.tokenizers import compute_word_piece_vocabulary

        if (
            isinstance(vocabulary_size, bool)
            or not isinstance(vocabulary_size, int)
            or vocabulary_size <= len(RESERVED_TOKENS)
        ):
            raise ConfigError(
                "`vocabulary_size` must be an integer larger than the "
                f"{len(RESERVED_TOKENS)} reserved tokens. Received: "
                f"vocabulary_size={vocabulary_size!r}"
            )
        # Validates sequence_length and lowercase before the slow part.
        splitter = cls(RESERVED_TOKENS, sequence_length, lowercase)
        dataset = _text_dataset(texts)
        # Cached: the second pass, over single characters, reuses the split.
        words = dataset.map(
            splitter.split_words, num_parallel_calls=tf.data.AUTOTUNE
        ).cache()
        try:
            vocabulary = compute_word_piece_vocabulary(
                words,
                vocabulary_size,
                lowercase=False,
                strip_accents=False,
                split=False,
                split_on_cjk=True,
                suffix_indicator=SUFFIX_INDICATOR,
                reserved_tokens=RESERVED_TOKENS,
            )
        except StopIteration:
            raise DataError(
                "Cannot learn a vocabulary: `texts` contains no words."
            ) from None
        unreachable = _isolated_suffixes(splitter, vocabulary)
        vocabulary = [token for token in vocabulary if token not in unreachable]
        vocabulary += _frequent_characters(
            words, set(vocabulary), vocabulary_size - len(vocabulary)
        )
        return cls(vocabulary, sequence_length, lowercase)

    # === Save / load ===

    def save(self, directory):
        """Writes `vocab.txt` and `tokenizer.json` into `directory`."""
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, VOCABULARY_FILE)
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write("".join(token + "\n" for token in self._vocabulary))
        path = os.path.join(directory, CONFIG_FILE)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.get_config(), f, indent=2)
            f.write("\n")

    @classmethod
    def load(cls, directory):
        """Reads a Tokenizer written by `save`; DataError names a bad file."""
        path = os.path.join(directory, CONFIG_FILE)
        config = _read_json(path)
        if not isinstance(config, dict) or not {"sequence_length", "lowercase"} <= set(config) <= {
            "sequence_length",
            "lowercase",
            "normalization",
        }:
            raise DataError(
                f"{path}: expected a JSON object with the keys 'sequence_length', "
                f"'lowercase' and (optionally) 'normalization'. Received: {config!r}"
            )
        vocabulary_path = os.path.join(directory, VOCABULARY_FILE)
        vocabulary = _read_lines(vocabulary_path)
        try:
            _check_vocabulary(vocabulary)
        except ConfigError as error:
            raise DataError(f"{vocabulary_path}: {error}") from None
        try:
            return cls(vocabulary, **config)
        except ConfigError as error:
            raise DataError(f"{path}: {error}") from None

    def get_config(self):
        return {
            "sequence_length": self._sequence_length,
            "lowercase": self._lowercase,
            "normalization": self._normalization,
        }


def _check_vocabulary(vocabulary):
    if not isinstance(vocabulary, (list, tuple)) or not all(
        isinstance(token, str) and token and not set(token) & {"\n", "\r"}
        for token in vocabulary
    ):
        raise ConfigError(
            "`vocabulary` must be a list of non-empty one-line strings. "
            "Received: "
            f"vocabulary={_preview(vocabulary)}"
        )
    missing = [token for token in RESERVED_TOKENS if token not in vocabulary]
    if missing or vocabulary[0] != "[PAD]":
        raise ConfigError(
            f"`vocabulary` must hold the reserved tokens {RESERVED_TOKENS}, "
            f"with [PAD] first (id 0 is padding). Received: vocabulary={_preview(vocabulary)}"
        )
    seen = set()
    duplicates = []
    for token in vocabulary:
        if token in seen:
            duplicates.append(token)
        seen.add(token)
    if duplicates:
        raise ConfigError(
            "`vocabulary` must not contain duplicate tokens. Received: "
            f"vocabulary with duplicates {duplicates[:10]!r}"
        )


def _preview(vocabulary, size=8):
    if isinstance(vocabulary, (list, tuple)) and len(vocabulary) > size:
        return f"{list(vocabulary[:size])!r}... ({len(vocabulary)} tokens)"
    return repr(vocabulary)


def _text_dataset(texts):
    """Batches of strings from a list or a Dataset of scalars or vectors."""
    if isinstance(texts, tf.data.Dataset):
        spec = texts.element_spec
        if (
            not isinstance(spec, tf.TensorSpec)
            or spec.dtype != tf.string
            or spec.shape.rank not in (0, 1)
        ):
            raise DataError(
                "`texts` must be a Dataset of scalar or 1-D tf.string. "
                f"Received: element_spec={spec}"
            )
        return texts.batch(1024) if spec.shape.rank == 0 else texts
    if not isinstance(texts, (list, tuple)) or not all(
        isinstance(text, str) for text in texts
    ):
        raise DataError(
            "`texts` must be a list of strings or a tf.data.Dataset. "
            f"Received: texts of type {type(texts).__name__}"
        )
    if not texts:
        raise DataError("Cannot learn a vocabulary: `texts` is empty.")
    return tf.data.Dataset.from_tensor_slices(list(texts)).batch(1024)


def _isolated_suffixes(splitter, vocabulary):
    """The `"##c"` tokens whose character is always a word of its own."""
    suffixes = [
        token
        for token in vocabulary
        if token.startswith(SUFFIX_INDICATOR)
        and len(token) == len(SUFFIX_INDICATOR) + 1
    ]
    if not suffixes:
        return set()
    # "cc" splits into two words exactly when c is punctuation or CJK.
    doubled = tf.constant([token[-1] * 2 for token in suffixes])
    word_counts = splitter.split_words(doubled).row_lengths().numpy()
    return {token for token, n in zip(suffixes, word_counts) if n == 2}


def _frequent_characters(words, exclude, count):
    """The `count` most frequent single-character words not in `exclude`."""
    if count <= 0:
        return []
    counts = collections.Counter()
    for batch in words.map(_single_characters):
        counts.update(batch.numpy().tolist())
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    characters = [word.decode("utf-8") for word, _ in ranked]
    return [c for c in characters if c not in exclude][:count]


def _single_characters(words):
    words = words.flat_values
    return tf.boolean_mask(
        words, tf.strings.length(words, unit="UTF8_CHAR") == 1
    )


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found.") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        message = f"{path}: not a readable JSON file ({error})."
        raise DataError(message) from None


def _read_lines(path):
    try:
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found.") from None
    except (OSError, UnicodeDecodeError) as error:
        message = f"{path}: not a readable UTF-8 file ({error})."
        raise DataError(message) from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]
