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

from keras_encoder.data.pipeline import padded_length_bounds
from keras_encoder.layers.layer_utils import check_positive_int


# Serving batches are split by length into these groups (the last bound is
# the tokenizer's length). Compiled with XLA, each group is padded to its
# bound and its row count to one of SERVING_ROW_SIZES, so the model runs on
# at most 5 x 16 shapes (larger batches: multiples of 64 rows), each
# compiled on its first use. Finer steps waste less padding but compile
# more shapes: counted from the reviews test split's token counts at batch
# 32, 80% of the tokens these groups run on are real (59% with bounds 32,
# 64 and power-of-two row counts).
SERVING_LENGTH_BOUNDS = (24, 40, 56, 80)
SERVING_ROW_SIZES = (1, 2, 3, 4, 6, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64)


def classifier_serving(
    model,
    tokenizer,
    label_names,
    length_bounds=SERVING_LENGTH_BOUNDS,
    jit_compile=True,
    row_sizes=SERVING_ROW_SIZES,
):
    """The serving function of a classifier: raw strings in, predictions out.

    `serve` is a `tf.function` for a SavedModel's `serving_default`. It takes a 1-D `tf.string` tensor named `text` and returns
    `probabilities` float32 `(B, C)`, `label_id` int32 `(B,)` and `label`
    string `(B,)`. Empty strings and strings longer than the tokenizer's
    `sequence_length` are valid input (the latter are truncated, as in
    training).

    A batch is not padded to its longest text as a whole: its rows are
    grouped by token count (up to each of `length_bounds`, then the rest),
    and each non-empty group runs through the model padded to its own
    longest row, so one long review does not make 31 short ones pay for
    its length. Results come back in input order.

    With `jit_compile=True` (the default) the model runs compiled by XLA,
    which fuses its many small operations: on CPU a single review is
    answered in about three quarters of the time. XLA compiles one program
    per input shape, so each group is padded to its bound (the last to the
    tokenizer's `sequence_length`) and its row count to a size in
    `row_sizes`; the first call that meets a new shape waits for its
    compilation (a few tenths of a second on CPU) in each process that
    loads the SavedModel. A batch of one text skips the grouping.

    Args:
        model: a Keras model from token ids `(B, T)` to logits `(B, C)`.
        tokenizer: the `keras_encoder.text.Tokenizer` used in training.
        label_names: list of class names, in class-id order.
        length_bounds: tuple of int. Token counts that separate the groups;
            `()` runs the whole batch at once. Bounds at or above the
            tokenizer's `sequence_length` are ignored.
        jit_compile: bool. Whether the model runs compiled by XLA on fixed
            shapes. Defaults to `True`.
        row_sizes: tuple of increasing int. With `jit_compile`, the row
            counts a group is padded to (beyond the largest, to a multiple
            of it). Defaults to `SERVING_ROW_SIZES`.
    """
    if jit_compile:
        if not row_sizes or list(row_sizes) != sorted(set(row_sizes)):
            raise ValueError(
                "`row_sizes` must be increasing positive integers. "
                f"Received: row_sizes={row_sizes!r}"
            )
        for size in row_sizes:
            check_positive_int("row_sizes", size)
    labels = tf.constant(list(label_names), dtype=tf.string)

    def logits_of(ids):
        return tf.cast(model(ids, training=False), tf.float32)

    fixed_shapes = {}
    if jit_compile:
        logits_of = tf.function(logits_of, jit_compile=True)
        fixed_shapes = {"max_length": tokenizer.sequence_length, "row_sizes": tuple(row_sizes)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(text):
        token_ids = tokenizer.tokenize(text)  # ragged (B, T)
        logits = grouped_by_length(
            logits_of,
            token_ids,
            length_bounds,
            output_shape=(len(label_names),),
            pad_id=tokenizer.pad_id,
            **fixed_shapes,
        )  # (B, C)
        probabilities = tf.nn.softmax(logits, axis=-1)
        label_id = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return {
            "probabilities": probabilities,
            "label_id": label_id,
            "label": tf.gather(labels, label_id),
        }

    return serve


def grouped_by_length(fn, token_ids, length_bounds, output_shape, pad_id=0, max_length=None, row_sizes=None):
    """`fn` on rows grouped by length; per-row outputs in input order.

    Args:
        fn: dense int32 `(b, t)` ids to a float32 `(b, *output_shape)`.
        token_ids: int32 `tf.RaggedTensor` `(B, None)`.
        length_bounds: tuple of increasing int: group `i` holds rows with at
            most `length_bounds[i]` tokens (and more than the bound before);
            one last group holds the rest.
        output_shape: tuple of int. `fn`'s output shape for one row.
        pad_id: int. Padding id.
        max_length: int or `None`. With an int, every group is padded to
            its bound (the last group to `max_length`) instead of to its
            longest row, so `fn` sees at most `len(length_bounds) + 1`
            lengths; bounds at or above `max_length` are dropped.
        row_sizes: tuple of increasing int, or `None`. With a tuple, a
            group of `n` rows is padded with empty rows to the smallest size
            in `row_sizes` that holds it (beyond the largest, to a multiple
            of it) and the extra outputs are dropped, so `fn` only sees a
            few batch sizes. With `max_length`, this bounds the shapes an
            XLA-compiled `fn` is compiled for.

    Returns:
        `fn`'s outputs for all rows, `(B, ...)`, in the order of `token_ids`.
    """
    if max_length:
        # Bounds at or past the longest input would only pad beyond it.
        group_lengths = list(padded_length_bounds(length_bounds, max_length))
        bounds = group_lengths[:-1]
    else:
        bounds = sorted(length_bounds)
        group_lengths = [None] * (len(bounds) + 1)
    sizes = sorted(row_sizes or ())

    def run(ids, length):
        dense = ids.to_tensor(default_value=pad_id, shape=None if length is None else [None, length])
        if not sizes:
            return fn(dense)
        count = tf.shape(dense)[0]
        largest = sizes[-1]
        index = tf.minimum(tf.searchsorted(sizes, count[tf.newaxis])[0], len(sizes) - 1)
        size = tf.where(count <= largest, tf.gather(sizes, index), (count + largest - 1) // largest * largest)
        dense = tf.pad(dense, [[0, size - count], [0, 0]], constant_values=pad_id)
        return fn(dense)[:count]

    if not bounds:
        return run(token_ids, group_lengths[-1])
    lengths = tf.cast(token_ids.row_lengths(), tf.int32)
    group = tf.searchsorted(tf.constant(bounds, tf.int32), lengths, side="left")  # (B,) in 0 .. len(bounds)

    def one_row():
        # A batch of one skips the grouping: the row runs as its group would
        # (same padding, same truncation, the same shapes reach `fn`). The
        # sum is that row's group, and stays well defined while tracing for
        # batches whose static size is 0.
        return tf.switch_case(
            tf.reduce_sum(group), [lambda length=length: run(token_ids, length) for length in group_lengths]
        )

    return tf.cond(
        tf.equal(token_ids.nrows(), 1),
        one_row,
        lambda: _grouped(run, token_ids, group, group_lengths, output_shape),
    )


def _grouped(run, token_ids, group, group_lengths, output_shape):
    rows, outputs = [], []
    for index, length in enumerate(group_lengths):
        members = tf.cast(tf.where(tf.equal(group, index))[:, 0], tf.int32)
        ids = tf.gather(token_ids, members)
        # Skip the model entirely for an empty group.
        result = tf.cond(
            tf.size(members) > 0,
            lambda ids=ids, length=length: run(ids, length),
            lambda: tf.zeros([0, *output_shape], tf.float32),
        )
        rows.append(members)
        outputs.append(result)
    return tf.dynamic_stitch(rows, outputs)


# === Token tagging ===

# Characters that separate units and are never tagged: whitespace and the
# control/format characters the tokenizer also treats as spaces.
_SEPARATOR = r"[\s\p{Z}\p{Cc}\p{Cf}]"


def split_units(text, unit):
    """Raw strings to tagging units with character offsets (pure TensorFlow).

    Args:
        text: 1-D `tf.string` batch.
        unit: `"char"` (every non-space character is a unit, as for
            Chinese) or `"word"` (whitespace-separated words).

    Returns:
        `(units, starts, ends)`: ragged `(B, U)` strings and int32 offsets
        in characters (`text[start:end]` in Python is the unit). Bytes that
        are not UTF-8 count as one replacement character each.
    """
    characters, _ = tf.strings.unicode_split_with_offsets(
        text, "UTF-8", errors="replace"
    )  # (B, C)
    positions = tf.cast(tf.ragged.range(characters.row_lengths()), tf.int32)
    separator = tf.ragged.map_flat_values(tf.strings.regex_full_match, characters, _SEPARATOR)
    if unit == "char":
        keep = tf.logical_not(separator)
        starts = tf.ragged.boolean_mask(positions, keep)
        return tf.ragged.boolean_mask(characters, keep), starts, starts + 1
    if unit != "word":
        raise ValueError(f"`unit` must be 'char' or 'word'. Received: unit={unit!r}")
    # A word starts at a non-separator whose predecessor (in its row) is a
    # separator or the row start.
    flat_separator = separator.values
    previous = tf.concat([[True], flat_separator[:-1]], axis=0)
    row_start = tf.equal(positions.values, 0)
    starts_word = tf.logical_not(flat_separator) & (previous | row_start)
    word_of = tf.cumsum(tf.cast(starts_word, tf.int32)) - 1  # (chars,)
    member = tf.logical_not(flat_separator)
    num_words = tf.reduce_sum(tf.cast(starts_word, tf.int32))
    words = tf.strings.unsorted_segment_join(
        tf.boolean_mask(characters.values, member), tf.boolean_mask(word_of, member), num_words
    )
    ends = tf.math.unsorted_segment_max(
        tf.boolean_mask(positions.values, member) + 1, tf.boolean_mask(word_of, member), num_words
    )
    rows = tf.boolean_mask(characters.value_rowids(), starts_word)
    nrows = characters.nrows()

    def by_row(values):
        return tf.RaggedTensor.from_value_rowids(values, rows, nrows=nrows)

    return by_row(words), by_row(tf.boolean_mask(positions.values, starts_word)), by_row(ends)


def bio_entities(units, tags, starts, ends, unit):
    """Entity spans from BIO tags (pure TensorFlow; decodes like `bio_spans`).

    Args:
        units, tags: ragged `(B, U)` strings; `starts`, `ends`: int32
            character offsets of the units.
        unit: `"char"` or `"word"`: how an entity's units are joined into
            its text (no separator, or one space).

    Returns:
        dict of ragged `(B, E)`: `text`, `type`, `start`, `end` (character
        offsets, end exclusive).
    """
    flat_tags = tags.values
    prefix = tf.strings.substr(flat_tags, 0, 2)
    kind = tf.strings.regex_replace(flat_tags, r"^[BI]-|^O$", "")
    is_entity = tf.equal(prefix, "B-") | tf.equal(prefix, "I-")
    row_start = tf.equal(tf.ragged.range(tags.row_lengths()).values, 0)
    previous_entity = tf.concat([[False], is_entity[:-1]], axis=0) & tf.logical_not(row_start)
    previous_kind = tf.concat([[""], kind[:-1]], axis=0)
    continues = tf.equal(prefix, "I-") & previous_entity & tf.equal(previous_kind, kind)
    begins = is_entity & tf.logical_not(continues)
    entity_of = tf.cumsum(tf.cast(begins, tf.int32)) - 1
    count = tf.reduce_sum(tf.cast(begins, tf.int32))
    members = tf.boolean_mask(entity_of, is_entity)
    text = tf.strings.unsorted_segment_join(
        tf.boolean_mask(units.values, is_entity), members, count,
        separator="" if unit == "char" else " ",
    )
    start = tf.math.unsorted_segment_min(tf.boolean_mask(starts.values, is_entity), members, count)
    end = tf.math.unsorted_segment_max(tf.boolean_mask(ends.values, is_entity), members, count)
    rows = tf.boolean_mask(tags.value_rowids(), begins)
    nrows = tags.nrows()

    def by_row(values):
        return tf.RaggedTensor.from_value_rowids(values, rows, nrows=nrows)

    return {
        "text": by_row(text),
        "type": by_row(tf.boolean_mask(kind, begins)),
        "start": by_row(start),
        "end": by_row(end),
    }


def tagger_serving(tag_fn, tag_names, scheme="bio", unit="char"):
    """The serving function of a tagger: raw strings in, tags and spans out.

    `serve` is a `tf.function` for a SavedModel's `serving_default`. It
    takes a 1-D `tf.string` tensor named `text`. The text is cut into units
    (`split_units`: characters or whitespace-separated words) and `tag_fn`
    tags them. Outputs, padded per batch (strings with `""`, offsets with
    `-1`):

    - `tokens` `(B, U)` string, `tags` `(B, U)` string, `tag_probability`
      `(B, U)` float32 (the softmax of the logits at each chosen tag),
      `token_start`/`token_end` `(B, U)` int32 character offsets,
      `num_tokens` `(B,)` int32;
    - for a BIO tag set also `entity_text`, `entity_type` `(B, E)` string,
      `entity_start`/`entity_end` `(B, E)` int32 character offsets (end
      exclusive), `num_entities` `(B,)` int32.

    Args:
        tag_fn: ragged `(B, U)` unit strings to `(logits, tag_ids)`,
            ragged `(B, U, K)` float32 and `(B, U)` int32.
        tag_names: list of tag strings, in tag-id order.
        scheme: `"bio"` or `"plain"`.
        unit: `"char"` or `"word"`.
    """
    names = tf.constant(list(tag_names), dtype=tf.string)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(text):
        units, starts, ends = split_units(text, unit)
        logits, tag_ids = tag_fn(units)  # (B, U, K), (B, U)
        probabilities = tf.nn.softmax(logits.values, axis=-1)  # (units, K)
        tags = units.with_values(tf.gather(names, tag_ids.values))
        confidence = units.with_values(tf.gather(probabilities, tag_ids.values, batch_dims=1))
        outputs = {
            "tokens": units.to_tensor(""),
            "tags": tags.to_tensor(""),
            "tag_probability": confidence.to_tensor(0.0),
            "token_start": starts.to_tensor(-1),
            "token_end": ends.to_tensor(-1),
            "num_tokens": tf.cast(units.row_lengths(), tf.int32),
        }
        if scheme == "bio":
            entities = bio_entities(units, tags, starts, ends, unit)
            outputs.update(
                entity_text=entities["text"].to_tensor(""),
                entity_type=entities["type"].to_tensor(""),
                entity_start=entities["start"].to_tensor(-1),
                entity_end=entities["end"].to_tensor(-1),
                num_entities=tf.cast(entities["text"].row_lengths(), tf.int32),
            )
        return outputs

    return serve


def write_saved_model(path, serve, *trackables):
    """Write a SavedModel at `path` whose `serving_default` is `serve`.

    `trackables` (the model, the tokenizer) are saved with it: their
    variables and lookup tables.
    """
    archive = keras.export.ExportArchive()
    for trackable in trackables:
        archive.track(trackable)
    archive.add_endpoint("serving_default", serve)
    archive.write_out(str(path), verbose=False)
