"""`EncoderTagger`: the task contract, the CRF loss, decoding, windows, saving, export."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_encoder.data.pipeline import tagging_dataset, tagging_sequences, tokenize_units_all
from keras_encoder.data.tagging import bio_spans
from keras_encoder.models import EncoderPreprocessor, EncoderTagger
from keras_encoder.models.tagger import bio_transitions
from keras_encoder.text import Tokenizer

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
SENTENCES = [
    ("江泽民在北京", ["B-PER", "I-PER", "I-PER", "O", "B-LOC", "I-LOC"]),
    ("北京人", ["B-LOC", "I-LOC", "O"]),
    ("这个手机很好用", ["O"] * 7),
    ("江泽民", ["B-PER", "I-PER", "I-PER"]),
]


def tagging_batches(tokenizer):
    """`SENTENCES` as a `tagging_dataset`: two batches of two."""
    units = [list(text) for text, _ in SENTENCES]
    tag_ids = tf.ragged.constant([[TAGS.index(tag) for tag in tags] for _, tags in SENTENCES], dtype=tf.int32)
    pieces = tokenize_units_all(tokenizer, units)
    return tagging_dataset(tagging_sequences(tokenizer, pieces, tag_ids), batch_size=2)


def ragged_logits(rows, num_tags):
    lengths = [len(row) for row in rows]
    values = np.concatenate([np.reshape(row, (-1, num_tags)) for row in rows] or [np.zeros((0, num_tags))])
    return tf.RaggedTensor.from_row_lengths(values.astype("float32"), np.asarray(lengths, "int64"))


@pytest.fixture
def make_tagger(make_backbone, tokenizer):
    """`make_tagger(**overrides)`: a character BIO tagger with a CRF, no dropout."""

    def make(tag_names=TAGS, unit="char", backbone=None, **overrides):
        values = dict(scheme="bio", crf=True, dropout=0.0)
        values.update(overrides)
        return EncoderTagger(
            backbone or make_backbone(), tag_names, EncoderPreprocessor(tokenizer, unit=unit), **values
        )

    return make


def randomize_crf(model, seed=0):
    rng = np.random.default_rng(seed)
    crf = model.get_layer("crf")
    k = crf.num_tags
    crf.transitions.assign(rng.normal(size=(k, k)).astype("float32"))
    crf.start_scores.assign(rng.normal(size=k).astype("float32"))
    crf.end_scores.assign(rng.normal(size=k).astype("float32"))
    return crf


# === The task contract ===


@pytest.mark.slow
@pytest.mark.parametrize("crf", [True, False])
def test_compile_fit_predict_and_keras_file_round_trip(crf, make_tagger, tokenizer, tmp_path):
    model = make_tagger(crf=crf)
    model.compile()
    assert isinstance(model.optimizer, keras.optimizers.AdamW)
    # With a CRF the loss is the chain's likelihood, in compute_loss.
    assert (model.loss is None) == crf
    history = model.fit(tagging_batches(tokenizer), epochs=1, verbose=0)
    assert set(history.history) == ({"loss"} if crf else {"loss", "accuracy"})
    assert np.isfinite(history.history["loss"]).all()
    assert int(model.optimizer.iterations) == 2

    texts = ["江泽民 在北京", "", "北京人。"]
    predicted = model.predict(texts)
    assert len(predicted) == 3
    for text, item in zip(texts, predicted):
        assert set(item) == {"tokens", "tags", "starts", "ends", "entities"}
        assert item["tokens"] == [c for c in text if not c.isspace()]
        assert [text[a:b] for a, b in zip(item["starts"], item["ends"])] == item["tokens"]
        assert set(item["tags"]) <= set(TAGS) and len(item["tags"]) == len(item["tokens"])
        expected = [
            ("".join(item["tokens"][a:b]), kind, item["starts"][a], item["ends"][b - 1])
            for kind, a, b in bio_spans(item["tags"])
        ]
        assert item["entities"] == expected
    # Sentences already cut into units get the same tags.
    assert model.tag_units([list("江泽民在北京"), [], list("北京人。")]) == [item["tags"] for item in predicted]
    ids = model.preprocessor(texts).numpy()
    logits = model.predict(ids, verbose=0)
    assert logits.shape == ids.shape + (len(TAGS),)

    path = tmp_path / "tagger.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, EncoderTagger)
    assert (loaded.tag_names, loaded.scheme, loaded.crf, loaded.unit) == (TAGS, "bio", crf, "char")
    np.testing.assert_array_equal(loaded.predict(ids, verbose=0), logits)
    assert loaded.predict(texts) == predicted


@pytest.mark.slow
def test_a_reloaded_crf_tagger_trains_on(make_tagger, tokenizer, tmp_path):
    model = make_tagger(crf=True)
    model.compile()
    data = tagging_batches(tokenizer)
    model.fit(data, epochs=2, verbose=0)
    before = model.evaluate(data, verbose=0)
    model.save(tmp_path / "tagger.keras")

    loaded = keras.models.load_model(tmp_path / "tagger.keras")
    # The CRF loss came back (not a cross-entropy), and so did the optimizer.
    assert loaded.evaluate(data, verbose=0) == pytest.approx(before, rel=1e-6)
    steps = int(model.optimizer.iterations)
    assert int(loaded.optimizer.iterations) == steps
    history = loaded.fit(data, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert int(loaded.optimizer.iterations) == steps + 2
    assert loaded.evaluate(data, verbose=0) < before


def tag_people_and_places(model, tokenizer):
    """Let the window table tag 江泽民 as a person and 北京 as a place, and
    the logits' bias every other character O, whatever the encoder says.
    Give the table a prime number of rows: with 4096, [SEP] two places
    after 京 hashes to 京's row."""
    logits = model.get_layer("logits")
    logits.bias.assign(np.array([5.0, 0, 0, 0, 0], "float32"))
    window = model.get_layer("window_scores")
    table = np.zeros((window.buckets, len(TAGS)), "float32")
    for character, tag in zip("江泽民北京", ["B-PER", "I-PER", "I-PER", "B-LOC", "I-LOC"]):
        token_id = int(tokenizer.tokenize(tf.constant([character]))[0, 1])
        row = int(window.feature_buckets(np.array([[token_id]]))[0, 0, window.window])
        table[row, TAGS.index(tag)] = 10.0
    window.table.assign(table)
    return model


def test_predict_returns_entities_with_character_offsets(make_tagger, tokenizer):
    model = tag_people_and_places(make_tagger(window_features=4093), tokenizer)
    text = "江泽民 在北京, 北京人"
    (item,) = model.predict([text])
    assert item["entities"] == [("江泽民", "PER", 0, 3), ("北京", "LOC", 5, 7), ("北京", "LOC", 9, 11)]
    assert [text[a:b] for _, _, a, b in item["entities"]] == ["江泽民", "北京", "北京"]
    plain = EncoderTagger(model.backbone, TAGS, model.preprocessor, scheme="plain")
    assert "entities" not in plain.predict([text])[0]


# === Losses ===


def test_crf_loss_is_the_mean_negative_log_likelihood_per_labelled_unit(make_tagger):
    model = make_tagger(tag_names=["O", "B-X", "I-X"])
    model.compile()
    crf = randomize_crf(model)
    rng = np.random.default_rng(2)
    emissions = rng.normal(size=(2, 5, 3)).astype("float32")
    tags = rng.integers(0, 3, size=(2, 5)).astype("int32")
    weights = np.array([[0, 1, 1, 1, 0], [0, 1, 1, 0, 0]], "float32")
    likelihood = np.asarray(crf.log_likelihood(emissions, tags, weights))
    ids = np.array([[2, 7, 8, 9, 3], [2, 7, 8, 3, 0]], "int32")
    padded = (
        np.pad(ids, [[0, 0], [0, 4]]),
        np.concatenate([np.where(weights > 0, tags, -1), rng.integers(0, 3, size=(2, 4))], axis=1),
        np.concatenate([emissions, rng.normal(size=(2, 4, 3)).astype("float32")], axis=1),
        np.pad(weights, [[0, 0], [0, 4]]),
    )
    # Padding, and labels where the weight is 0 (even out of range), change nothing.
    loss = model.compute_loss(x=padded[0], y=padded[1], y_pred=padded[2], sample_weight=padded[3])
    assert float(loss) == pytest.approx(-likelihood.sum() / 5, rel=1e-5)
    # Without weights every real token counts: [CLS] and [SEP] too, not padding.
    real = (ids != 0).astype("float32")
    loss = model.compute_loss(x=padded[0], y=np.pad(tags, [[0, 0], [0, 4]]), y_pred=padded[2])
    expected = -np.asarray(crf.log_likelihood(emissions, tags, real)).sum() / real.sum()
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_cross_entropy_ignores_padding_and_unlabelled_pieces(make_tagger, tokenizer):
    model = make_tagger(crf=False)
    model.compile()
    sentences = [["Reading", "好"], ["中国", "书", "x"]]
    tag_ids = tf.ragged.constant([[1, 2], [3, 0, 1]], dtype=tf.int32)
    sequences = tagging_sequences(tokenizer, tokenize_units_all(tokenizer, sentences), tag_ids)

    def scores(width):
        token_ids, labels, weights = (s.to_tensor(shape=[None, width]).numpy() for s in sequences)
        return model.evaluate(token_ids, labels, sample_weight=weights, verbose=0)

    np.testing.assert_allclose(scores(6), scores(16), atol=1e-6)
    # By hand: mean cross-entropy over the five labelled units.
    token_ids, labels, weights = (s.to_tensor().numpy() for s in sequences)
    logits = model.predict(token_ids, verbose=0)
    chosen = weights > 0
    log_probabilities = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -np.take_along_axis(log_probabilities, labels[..., None], -1)[..., 0][chosen].mean()
    loss, accuracy = scores(6)
    assert loss == pytest.approx(expected, abs=1e-5)
    assert accuracy == pytest.approx((logits.argmax(-1) == labels)[chosen].mean())


def test_padding_is_masked_and_its_labels_are_ignored(make_tagger):
    ids = np.array([[2, 7, 8, 9, 3, 0], [2, 11, 3, 0, 0, 0]], "int32")
    tags = np.array([[0, 1, 2, 3, 0, 0], [0, 1, 0, 0, 0, 0]])
    garbage = np.where(ids == 0, 3, tags)  # different labels on padding only
    for crf in (True, False):
        model = make_tagger(crf=crf)
        # The loss only: the default accuracy reads sample weights, and
        # counts padding when there are none.
        model.compile(weighted_metrics=[])
        logits = model(ids)
        np.testing.assert_array_equal(np.asarray(logits._keras_mask), ids != 0)
        assert model.evaluate(ids, tags, verbose=0) == pytest.approx(model.evaluate(ids, garbage, verbose=0), abs=1e-6)


@pytest.mark.parametrize("window_features", [0, 512])
def test_padding_appended_to_token_ids_changes_no_logit(window_features, make_tagger, make_backbone):
    model = make_tagger(backbone=make_backbone(num_layers=2, position="rotary"), window_features=window_features)
    if window_features:
        table = model.get_layer("window_scores").table
        table.assign(np.random.default_rng(0).normal(size=table.shape).astype("float32"))
    ids = model.preprocessor(["江泽民在北京", "北京人", "很好"]).numpy()
    padded = np.pad(ids, [[0, 0], [0, 5]])
    np.testing.assert_allclose(
        model.predict(padded, verbose=0)[:, : ids.shape[1]], model.predict(ids, verbose=0), atol=1e-5
    )


def test_training_learns_transitions_and_lowers_the_loss(make_tagger):
    rng = np.random.default_rng(4)
    model = make_tagger(tag_names=["O", "B-X", "I-X"])
    # Token 5 is B-X and token 6 I-X; everything else O.
    ids = rng.choice([5, 6, 7, 8, 9], size=(64, 8)).astype("int32")
    ids[:, 0], ids[:, -1] = 2, 3
    tags = np.where(ids == 5, 1, np.where(ids == 6, 2, 0)).astype("int32")
    for row in range(64):  # I-X only after B-X or I-X
        for t in range(1, 8):
            if tags[row, t] == 2 and tags[row, t - 1] == 0:
                tags[row, t] = 0
    weights = np.ones_like(tags, dtype="float32")
    weights[:, 0] = weights[:, -1] = 0
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(ids, tags, sample_weight=weights, epochs=5, batch_size=16, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0], losses
    assert np.abs(np.asarray(model.get_layer("crf").transitions)).max() > 0.01  # the scores were trained


# === Decoding ===


@pytest.mark.parametrize("crf, scheme", [(True, "plain"), (True, "bio"), (False, "bio"), (False, "plain")])
def test_decode_finds_the_best_tag_sequence(crf, scheme, make_tagger):
    names = ["O", "B-A", "I-A", "B-B", "I-B"]
    model = make_tagger(tag_names=names, scheme=scheme, crf=crf)
    if crf:
        transitions, start_scores, end_scores = (np.asarray(x) for x in randomize_crf(model).decode_scores())
    allowed, start = bio_transitions(names)
    rng = np.random.default_rng(1)
    lengths = [0, 1, 2, 3, 4, 5, 0, 1, 4]
    rows = [3 * rng.normal(size=(n, 5)) for n in lengths]
    decoded = model.decode(ragged_logits(rows, 5)).to_list()

    def valid(path):
        return scheme != "bio" or not path or (
            start[path[0]] and all(allowed[a, b] for a, b in zip(path, path[1:]))
        )

    def score(row, path):
        if crf:
            moves = sum(transitions[a, b] for a, b in zip(path, path[1:]))
            return start_scores[path[0]] + moves + end_scores[path[-1]] + sum(row[i, t] for i, t in enumerate(path))
        log_probabilities = row - np.log(np.exp(row).sum(-1, keepdims=True))
        return sum(log_probabilities[i, t] for i, t in enumerate(path))

    for row, path in zip(rows, decoded):
        candidates = [p for p in itertools.product(range(5), repeat=len(row)) if valid(p)]
        assert path == list(max(candidates, key=lambda p: score(row, p) if p else 0.0))
    # Only empty sentences, and no sentence at all.
    assert model.decode(ragged_logits([np.zeros((0, 5))] * 2, 5)).to_list() == [[], []]
    assert model.decode(ragged_logits([], 5)).to_list() == []


def test_bio_decoding_never_takes_a_forbidden_move(make_tagger):
    names = ["O", "B-A", "I-A"]
    model = make_tagger(tag_names=names, crf=False)
    valid = [[0, 1, 2, 2, 0, 1], [1]]
    one_hot = np.eye(3, dtype="float32") * 5
    assert model.decode(ragged_logits([one_hot[v] for v in valid], 3)).to_list() == valid
    # I-A after O is repaired into a valid sequence: O B-A I-A and B-A I-A I-A tie.
    assert model.decode(ragged_logits([one_hot[[0, 2, 2]]], 3)).to_list() in ([[0, 1, 2]], [[1, 2, 2]])
    # With a CRF: a strong I-A after a start can only be reached through B-A.
    model = make_tagger(tag_names=names)
    crf = randomize_crf(model)
    emissions = np.zeros((1, 2, 3), "float32")
    emissions[0, 1, 2] = 10.0
    assert float(crf.log_likelihood(emissions, np.array([[0, 2]], "int32"))[0]) < -1000  # O -> I-A
    assert model.decode(ragged_logits([emissions[0]], 3)).to_list() == [[1, 2]]


def test_unit_logits_match_the_model_on_each_window(make_backbone, tokenizer):
    short = Tokenizer(list(tokenizer.vocabulary), sequence_length=8)
    model = EncoderTagger(make_backbone(), TAGS, EncoderPreprocessor(short, unit="word"), crf=False)
    ids = {token: short.vocabulary.index(token) for token in ("[CLS]", "[SEP]", "好", "read", "##ing", "书")}
    sentences = tf.ragged.constant([["好", "Reading", "书"], ["好"] * 9, []])
    logits = model.unit_logits(short.tokenize_units(sentences))
    assert logits.row_lengths().numpy().tolist() == [3, 9, 0]
    # Short sentence: one window; units read at their first piece.
    direct = model(tf.constant([[ids[t] for t in ("[CLS]", "好", "read", "##ing", "书", "[SEP]")]]))[0]
    np.testing.assert_allclose(logits[0].numpy(), tf.gather(direct, [1, 2, 4]).numpy(), atol=1e-5)
    # Nine units with room for six per window: windows of 6 and 3.
    first = model(tf.constant([[ids["[CLS]"]] + [ids["好"]] * 6 + [ids["[SEP]"]]]))[0, 1:7]
    second = model(tf.constant([[ids["[CLS]"]] + [ids["好"]] * 3 + [ids["[SEP]"]]]))[0, 1:4]
    np.testing.assert_allclose(logits[1].numpy(), np.concatenate([first, second]), atol=1e-5)


# === Export ===


@pytest.mark.slow
def test_export_serves_entities_with_offsets_with_tensorflow_alone(
    make_tagger, tokenizer, tmp_path, serve_in_fresh_python
):
    model = tag_people_and_places(make_tagger(window_features=4093), tokenizer)
    model.export(tmp_path / "export")
    long_text = "江泽民在北京。" * 3000  # 21,000 characters, 1,500 windows
    batches = [["江泽民 在北京", "", long_text, "北京人"], ["北京 人"], [""]]
    served = serve_in_fresh_python(tmp_path / "export", batches)
    assert served[0]["num_entities"].tolist() == [2, 0, 6000, 1]
    for batch, outputs in zip(batches, served):
        expected = model.predict(batch)
        assert outputs["num_tokens"].tolist() == [len(item["tokens"]) for item in expected]
        assert outputs["num_entities"].tolist() == [len(item["entities"]) for item in expected]
        for row, item in enumerate(expected):
            count, entities = len(item["tokens"]), len(item["entities"])
            assert outputs["tokens"][row, :count].tolist() == item["tokens"]
            assert outputs["tags"][row, :count].tolist() == item["tags"]
            assert outputs["token_start"][row, :count].tolist() == item["starts"]
            assert outputs["token_end"][row, :count].tolist() == item["ends"]
            assert list(zip(
                outputs["entity_text"][row, :entities].tolist(), outputs["entity_type"][row, :entities].tolist(),
                outputs["entity_start"][row, :entities].tolist(), outputs["entity_end"][row, :entities].tolist(),
            )) == item["entities"]
        # The probability of each chosen tag, from the model's own logits.
        units = tf.ragged.constant([item["tokens"] for item in expected], dtype=tf.string, ragged_rank=1)
        logits = model.unit_logits(tokenizer.tokenize_units(units))
        for row, item in enumerate(expected):
            probabilities = tf.nn.softmax(logits[row]).numpy()
            chosen = probabilities[np.arange(len(item["tags"])), [TAGS.index(t) for t in item["tags"]]]
            np.testing.assert_allclose(outputs["tag_probability"][row, : len(chosen)], chosen, atol=1e-5)


@pytest.mark.slow
def test_export_of_a_plain_word_tagger(make_tagger, tmp_path, serve_in_fresh_python):
    names = ["DT", "NN", "VB"]
    model = make_tagger(tag_names=names, unit="word", scheme="plain", crf=False)
    model.export(tmp_path / "export")
    batches = [["i saw new york today", "", "  mixed\tenglish "], ["read"]]
    served = serve_in_fresh_python(tmp_path / "export", batches)
    for batch, outputs in zip(batches, served):
        assert "entity_text" not in outputs
        for row, item in enumerate(model.predict(batch)):
            assert item["tokens"] == batch[row].split()
            count = len(item["tokens"])
            assert outputs["tags"][row, :count].tolist() == item["tags"]
            assert outputs["token_start"][row, :count].tolist() == item["starts"]
            assert outputs["token_end"][row, :count].tolist() == item["ends"]


# === Errors ===


def test_bad_arguments_name_the_argument(make_backbone):
    backbone = make_backbone()
    with pytest.raises(ValueError, match="`tag_names` must hold at least one tag"):
        EncoderTagger(backbone, [])
    with pytest.raises(ValueError, match="scheme='iob'"):
        EncoderTagger(backbone, TAGS, scheme="iob")
    with pytest.raises(ValueError, match="window_features=-1"):
        EncoderTagger(backbone, TAGS, window_features=-1)
    with pytest.raises(ValueError, match="window_scale=0"):
        EncoderTagger(backbone, TAGS, window_features=16, window_scale=0)


def test_raw_text_needs_a_preprocessor(make_backbone, tmp_path):
    model = EncoderTagger(make_backbone(), TAGS, scheme="bio")
    with pytest.raises(ValueError, match="needs a preprocessor"):
        model.predict(["江泽民"])
    with pytest.raises(ValueError, match="needs a preprocessor"):
        model.tag_units([["江"]])
    with pytest.raises(ValueError, match="needs a preprocessor"):
        model.export(tmp_path / "export")
    assert not (tmp_path / "export").exists()
