"""Masked-LM masks: keras-hub's single tokens, and n-gram spans (`SpanMaskGenerator`)."""

import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from keras_encoder.data.masking import (
    SPAN_PROBABILITIES,
    SpanMaskGenerator,
    mask_generator,
    mask_selection_length,
    span_length_probabilities,
)

PAD, CLS, SEP, MASK = 0, 2, 3, 4  # RESERVED_TOKENS' ids
SPECIAL = [PAD, CLS, SEP]
VOCABULARY_SIZE = 100


def sequences(rows, shortest, longest, length, seed=0, pairs=False):
    """`(rows, length)` ids: [CLS] text [SEP] (or [CLS] a [SEP] b [SEP]), padded."""
    rng = np.random.default_rng(seed)
    ids = np.full((rows, length), PAD, "int32")
    for row in range(rows):
        n = rng.integers(shortest, longest + 1)
        text = list(rng.integers(5, VOCABULARY_SIZE, n))
        if pairs:
            text.insert(int(rng.integers(1, n)), SEP)
        ids[row, : len(text) + 2] = [CLS, *text, SEP]
    return ids


def generator(mask_spans=4, mask_rate=0.15, length=64, **kwargs):
    return SpanMaskGenerator(
        vocabulary_size=VOCABULARY_SIZE, mask_rate=mask_rate, mask_token_id=MASK,
        mask_selection_length=mask_selection_length(mask_rate, length, mask_spans),
        unselectable_token_ids=SPECIAL, mask_spans=mask_spans, **kwargs,
    )


def keras_hub_count(ids, mask_rate=0.15):
    """Tokens keras-hub selects per row: ceil(mask_rate * n), in float32 as it computes it."""
    selectable = ~np.isin(ids, SPECIAL)
    return np.ceil(selectable.sum(1).astype("float32") * np.float32(mask_rate))


def span_lengths(spans):
    """Lengths of every span in a `SpanMaskGenerator.spans` output."""
    lengths = []
    for row in spans:
        lengths += list(np.unique(row[row >= 0], return_counts=True)[1])
    return np.array(lengths)


@pytest.mark.parametrize("mask_spans", [2, 3, 4])
def test_the_share_of_selected_tokens_is_the_single_token_share(mask_spans):
    ids = sequences(3000, 5, 60, 64)
    selected = generator(mask_spans).spans(ids).numpy() >= 0
    # As many as keras-hub selects, on average, and so mask_rate of the tokens
    # (plus keras-hub's rounding up on short sequences).
    assert selected.sum() / keras_hub_count(ids).sum() == pytest.approx(1, abs=0.02)
    long = sequences(2000, 60, 120, 128, seed=1)
    share = (generator(mask_spans, length=128).spans(long).numpy() >= 0).sum() / (~np.isin(long, SPECIAL)).sum()
    assert share == pytest.approx(0.15, abs=0.01)


@pytest.mark.parametrize("pairs", [False, True])
def test_spans_are_contiguous_and_on_real_tokens_only(pairs):
    ids = sequences(500, 2, 40, 48, pairs=pairs)
    spans = generator(4, mask_rate=0.3, length=48).spans(ids).numpy()
    assert not np.isin(ids[spans >= 0], SPECIAL).any()
    for row in spans:
        for span in np.unique(row[row >= 0]):
            positions = np.flatnonzero(row == span)
            np.testing.assert_array_equal(positions, np.arange(positions[0], positions[0] + len(positions)))
            assert len(positions) <= 4
    # With a [SEP] inside, a span never reaches over it (it is unselectable,
    # and a span is contiguous), yet both sides are masked.
    if pairs:
        second = np.cumsum(ids == SEP, axis=1) == 1
        assert (spans[second] >= 0).any() and (spans[~second] >= 0).any()


@pytest.mark.parametrize("mask_spans", [2, 3, 4])
def test_span_lengths_follow_macbert(mask_spans):
    ids = sequences(3000, 60, 120, 128, seed=2)
    lengths = span_lengths(generator(mask_spans, length=128).spans(ids).numpy())
    histogram = np.bincount(lengths, minlength=mask_spans + 1)[1:] / len(lengths)
    expected = np.array(SPAN_PROBABILITIES[:mask_spans]) / sum(SPAN_PROBABILITIES[:mask_spans])
    # Spans cut at the ends of a sequence make short ones a little more common.
    np.testing.assert_allclose(histogram, expected, atol=0.03)
    assert len(histogram) == mask_spans and lengths.max() == mask_spans


def test_span_length_probabilities_are_macbert_truncated_and_renormalized():
    assert span_length_probabilities(4) == pytest.approx((0.4, 0.3, 0.2, 0.1))
    assert span_length_probabilities(3) == pytest.approx((0.4 / 0.9, 0.3 / 0.9, 0.2 / 0.9))
    assert span_length_probabilities(2) == pytest.approx((4 / 7, 3 / 7))
    assert span_length_probabilities(1) == (1.0,)


def test_one_token_spans_select_what_keras_hub_selects(tokenizer):
    ids = sequences(400, 1, 60, 64)
    ours = generator(1)(ids)
    keras_hub_generator = keras_hub.layers.MaskedLMMaskGenerator(
        vocabulary_size=VOCABULARY_SIZE, mask_selection_rate=0.15, mask_token_id=MASK,
        mask_selection_length=mask_selection_length(0.15, 64), unselectable_token_ids=SPECIAL,
    )
    # keras-hub runs TensorFlow ops in a tf.function or tf.data (as in
    # training), and a Python loop on eager input.
    in_graph = tf.function(keras_hub_generator)(tf.constant(ids))
    eager = keras_hub_generator(ids)
    assert set(ours) == set(in_graph) == set(eager)
    for key in ours:
        assert ours[key].shape == in_graph[key].shape == eager[key].shape, key
        assert ours[key].dtype == eager[key].dtype, key
        # The graph gives int64 positions; ours are the model input's int32.
        assert key == "mask_positions" or ours[key].dtype == in_graph[key].dtype, key
    # Exactly keras-hub's count in every row, not only on average.
    np.testing.assert_array_equal(ours["mask_weights"].numpy().sum(1), keras_hub_count(ids))
    np.testing.assert_array_equal(in_graph["mask_weights"].numpy().sum(1), keras_hub_count(ids))
    # The model's generator for single tokens is keras-hub's, with the selection length it always had.
    single = mask_generator(tokenizer, 0.15)
    assert isinstance(single, keras_hub.layers.MaskedLMMaskGenerator)
    assert (single.mask_selection_length, single.mask_selection_rate) == (3, 0.15)  # ceil(0.15 * 16)
    assert single.unselectable_token_ids == [tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id]
    spans = mask_generator(tokenizer, 0.15, mask_spans=3)
    assert isinstance(spans, SpanMaskGenerator)
    assert (spans.mask_selection_length, spans.mask_spans, spans.mask_token_id) == (5, 3, tokenizer.mask_id)


def test_outputs_hold_the_original_tokens_and_treat_each_span_as_one():
    ids = sequences(2000, 5, 60, 64, seed=3)
    masker = generator(4, seed=7)
    tf.random.set_seed(11)
    spans = masker.spans(ids).numpy()
    tf.random.set_seed(11)  # the same draws again: masks of the spans above
    masked = {key: value.numpy() for key, value in masker(ids).items()}
    positions, targets, weights = masked["mask_positions"], masked["mask_ids"], masked["mask_weights"]
    chosen = weights > 0
    # Dense and padded: zero weight, position and id in the padding slots.
    assert positions.shape == (2000, mask_selection_length(0.15, 64, 4)) == weights.shape == targets.shape
    assert set(np.unique(weights)) == {0.0, 1.0}
    assert not positions[~chosen].any() and not targets[~chosen].any()
    # Padding slots only after the selected ones, positions ascending.
    np.testing.assert_array_equal(chosen, np.sort(chosen, axis=1)[:, ::-1])
    for row in range(len(ids)):
        row_positions = positions[row][chosen[row]]
        np.testing.assert_array_equal(row_positions, np.flatnonzero(spans[row] >= 0))
        np.testing.assert_array_equal(targets[row][chosen[row]], ids[row, row_positions])
    # Tokens outside the spans are untouched.
    np.testing.assert_array_equal(masked["token_ids"][spans < 0], ids[spans < 0])
    # Per span: all [MASK] (80%), all random (10%) or all kept (10%).
    kinds = {"mask": 0, "random": 0, "kept": 0}
    for row in range(len(ids)):
        for span in np.unique(spans[row][spans[row] >= 0]):
            new, old = masked["token_ids"][row, spans[row] == span], ids[row, spans[row] == span]
            if (new == MASK).all():
                kinds["mask"] += 1
            elif (new == old).all():
                kinds["kept"] += 1  # (or random tokens that happened to match)
            else:
                assert not np.isin(new, SPECIAL).any()
                kinds["random"] += 1
    total = sum(kinds.values())
    assert kinds["mask"] / total == pytest.approx(0.8, abs=0.03)
    assert kinds["random"] / total == pytest.approx(0.1, abs=0.03)
    assert kinds["kept"] / total == pytest.approx(0.1, abs=0.03)


def test_never_more_than_the_selection_length():
    ids = sequences(300, 20, 60, 64)
    masker = SpanMaskGenerator(
        vocabulary_size=VOCABULARY_SIZE, mask_rate=0.5, mask_token_id=MASK, mask_selection_length=5,
        unselectable_token_ids=SPECIAL, mask_spans=4,
    )
    masked = masker(ids)
    counts = masked["mask_weights"].numpy().sum(1)
    assert counts.max() == 5 and masked["mask_positions"].shape == (300, 5)
    # Whole spans are left out, not cut: the selection stops short of 5 at times.
    assert (counts < 5).any()
    # Sequences with no real token select nothing; one token is a whole sequence.
    empty = masker(np.array([[CLS, SEP, PAD, PAD], [CLS, 9, SEP, PAD]], "int32"))
    assert empty["mask_weights"].numpy().sum(1)[0] == 0
    np.testing.assert_array_equal(empty["token_ids"].numpy()[0], [CLS, SEP, PAD, PAD])
    assert masker(np.array([CLS, 9, 10, SEP], "int32"))["mask_positions"].shape == (5,)


def test_spans_run_inside_tf_data_in_parallel_and_repeat_with_a_seed():
    ids = sequences(64, 3, 30, 32)
    masker = generator(3, length=32)
    dataset = tf.data.Dataset.from_tensor_slices(ids).batch(8).map(masker, num_parallel_calls=tf.data.AUTOTUNE)
    spec = dataset.element_spec
    assert spec["token_ids"].shape.as_list() == [None, 32]
    assert spec["mask_positions"].shape.as_list() == [None, mask_selection_length(0.15, 32, 3)]
    assert (spec["mask_positions"].dtype, spec["mask_weights"].dtype) == (tf.int32, tf.float32)
    batches = list(dataset)
    assert len(batches) == 8 and sum(float(b["mask_weights"].numpy().sum()) for b in batches) > 0

    def draw():
        tf.random.set_seed(5)
        return masker(ids)["token_ids"].numpy()

    np.testing.assert_array_equal(draw(), draw())


def test_masked_lm_batches_with_spans(tokenizer):
    from keras_encoder.data.pipeline import masked_lm_dataset, tokenize_all

    texts = ["这个手机很好用", "质量太差了", "还不错推荐", "很好", "江泽民在北京"] * 8
    ids = tokenize_all(tokenizer, texts)
    for fixed in (False, True):
        dataset = masked_lm_dataset(ids, tokenizer, 8, shuffle=True, seed=0, mask_spans=3, fixed_masks=fixed)
        for inputs, targets, weights in dataset:
            assert inputs["mask_positions"].shape[1] == weights.shape[1] == 5
            chosen = weights.numpy() > 0
            assert not np.isin(targets.numpy()[chosen], [tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id]).any()


@pytest.mark.parametrize("value", [0, 5, -1, 2.0, True, "2", None])
def test_a_bad_mask_spans_names_the_argument(value):
    with pytest.raises(ValueError, match=f"mask_spans={value!r}"):
        SpanMaskGenerator(VOCABULARY_SIZE, 0.15, MASK, 5, mask_spans=value)
    with pytest.raises(ValueError, match="mask_spans"):
        span_length_probabilities(value)


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="mask_rate=1"):
        generator(mask_rate=1)
    with pytest.raises(ValueError, match="mask_selection_length=0"):
        SpanMaskGenerator(VOCABULARY_SIZE, 0.15, MASK, 0)
    with pytest.raises(ValueError, match="mask_token_id=100"):
        SpanMaskGenerator(VOCABULARY_SIZE, 0.15, 100, 5)
    with pytest.raises(ValueError, match="random_token_rate=0.3"):
        generator(mask_token_rate=0.8, random_token_rate=0.3)
