"""Distillation: the student built from a teacher, the distillation loss, and the refusals."""

import json

import keras
import numpy as np
import pytest

from keras_encoder.compress.distill import (
    attach_teacher,
    student_blocks,
    student_from_teacher,
    teacher_run_config,
)
from keras_encoder.errors import ConfigError, DataError
from keras_encoder.models import EncoderClassifier, EncoderPreprocessor

TEXTS = ["这个手机很好用", "质量太差了", "还不错 推荐", "mixed English 和中文", "很好", "太差"]
LABELS = np.array([1, 0, 1, 1, 1, 0])
NAMES = ["negative", "positive"]
BERT_LIKE = dict(
    position="learned", embedding_norm=True, layer_norm_epsilon=1e-12, segment_vocabulary_size=2,
    pooler=True, pooling="cls",
)


def make_teacher(make_backbone, tokenizer, layers=3, names=NAMES, **overrides):
    values = dict(hidden_dim=16, num_heads=2, intermediate_dim=32, num_layers=layers)
    values.update(overrides)
    model = EncoderClassifier(
        make_backbone(**values), len(names), EncoderPreprocessor(tokenizer), label_names=names, dropout=0.0,
    )
    model(model.preprocessor(TEXTS))  # built
    # Not an initialization: blocks that differ, so that copying the wrong one shows.
    for weight in model.weights:
        weight.assign(weight + np.random.default_rng(len(weight.path)).normal(0, 0.05, weight.shape))
    return model


def logits(model, ids):
    return keras.ops.convert_to_numpy(model(ids, training=False))


def test_student_blocks_are_evenly_spaced_and_end_at_the_top():
    assert student_blocks(6, 2) == [2, 5]
    assert student_blocks(6, 3) == [1, 3, 5]
    assert student_blocks(12, 6) == [1, 3, 5, 7, 9, 11]
    assert student_blocks(6, 1) == [5]
    assert student_blocks(4, 4) == [0, 1, 2, 3]
    for bad in (0, 7, True, 2.0):
        with pytest.raises(ConfigError, match=r"--layers must be between 1 and the teacher's 6 blocks"):
            student_blocks(6, bad)


@pytest.mark.parametrize("style", ["ours", "bert"])
def test_a_student_of_every_block_computes_what_the_teacher_computes(make_backbone, tokenizer, style):
    teacher = make_teacher(make_backbone, tokenizer, **(BERT_LIKE if style == "bert" else {}))
    student = student_from_teacher(teacher, 3)
    ids = teacher.preprocessor(TEXTS)
    np.testing.assert_array_equal(logits(student, ids), logits(teacher, ids))


@pytest.mark.parametrize("style", ["ours", "bert"])
def test_a_shallower_student_is_the_teacher_with_the_other_blocks_skipped(make_backbone, tokenizer, style):
    teacher = make_teacher(make_backbone, tokenizer, **(BERT_LIKE if style == "bert" else {}))
    student = student_from_teacher(teacher, 2, blocks=[0, 2])
    assert [layer.name for layer in student.backbone.layers if layer.name.startswith("block_")] == [
        "block_0", "block_1"
    ]
    for new, old in ((0, 0), (1, 2)):
        for a, b in zip(student.backbone.get_layer(f"block_{new}").weights,
                        teacher.backbone.get_layer(f"block_{old}").weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    block_size = sum(np.prod(w.shape) for w in teacher.backbone.get_layer("block_1").weights)
    assert student.count_params() == teacher.count_params() - block_size
    # What the teacher computes with its middle block replaced by the identity.
    middle = teacher.backbone.get_layer("block_1")
    original_call = middle.call
    middle.call = lambda x, *args, **kwargs: x
    try:
        for text in TEXTS:  # one text at a time: no padding
            ids = teacher.preprocessor([text])
            np.testing.assert_allclose(logits(student, ids), logits(teacher, ids), atol=1e-5)
    finally:
        middle.call = original_call
    assert not np.allclose(logits(student, ids), logits(teacher, ids), atol=1e-3)  # the block mattered


def test_the_student_survives_saving(make_backbone, tokenizer, assert_survives_saving):
    student = student_from_teacher(make_teacher(make_backbone, tokenizer), 1)
    assert_survives_saving(student, student.preprocessor(TEXTS))


def loss_of(student, ids, training=True):
    return float(student.compute_loss(ids, LABELS, student(ids, training=False), training=training))


def test_the_loss_blends_labels_and_the_softened_teacher(make_backbone, tokenizer):
    teacher = make_teacher(make_backbone, tokenizer)
    student = student_from_teacher(teacher, 1)
    student.compile(optimizer="adamw")
    ids = teacher.preprocessor(TEXTS)
    label_loss = loss_of(student, ids)
    attach_teacher(student, teacher, temperature=3.0, weight=0.0)
    assert loss_of(student, ids) == pytest.approx(label_loss, rel=1e-6)

    attach_teacher(student, teacher, temperature=3.0, weight=1.0)
    t, s = logits(teacher, ids) / 3.0, logits(student, ids) / 3.0
    p = np.exp(t) / np.exp(t).sum(-1, keepdims=True)
    q = np.exp(s) / np.exp(s).sum(-1, keepdims=True)
    kl = (p * np.log(p / q)).sum(-1).mean() * 9.0  # T^2 KL(teacher || student)
    assert kl > 1e-4
    assert loss_of(student, ids) == pytest.approx(kl, rel=1e-4)

    attach_teacher(student, teacher, temperature=3.0, weight=0.25)
    assert loss_of(student, ids) == pytest.approx(0.75 * label_loss + 0.25 * kl, rel=1e-4)
    # Validation (training=False) scores the labels alone, as without a teacher.
    assert loss_of(student, ids, training=False) == pytest.approx(label_loss, rel=1e-6)


def test_a_student_equal_to_its_teacher_has_nothing_to_learn(make_backbone, tokenizer):
    teacher = make_teacher(make_backbone, tokenizer)
    student = attach_teacher(student_from_teacher(teacher, 3), teacher, weight=1.0, hidden_weight=1.0)
    student.compile(optimizer="adamw")
    assert loss_of(student, teacher.preprocessor(TEXTS)) == pytest.approx(0.0, abs=1e-6)


def test_the_hidden_state_loss_ignores_padding(make_backbone, tokenizer):
    teacher = make_teacher(make_backbone, tokenizer)
    student = attach_teacher(student_from_teacher(teacher, 1), teacher, weight=0.0, hidden_weight=1.0)
    student.compile(optimizer="adamw")
    ids = keras.ops.convert_to_numpy(teacher.preprocessor(TEXTS))
    longer = np.pad(ids, [(0, 0), (0, 5)])  # five more padding columns
    plain = loss_of(student, ids)
    assert plain > loss_of(attach_teacher(student, teacher, weight=0.0), ids)  # the term counts
    attach_teacher(student, teacher, weight=0.0, hidden_weight=1.0)
    assert loss_of(student, longer) == pytest.approx(plain, rel=1e-5)


def test_fit_trains_the_student_alone_and_it_saves_without_the_teacher(make_backbone, tokenizer, tmp_path):
    teacher = make_teacher(make_backbone, tokenizer)
    before = [w.numpy().copy() for w in teacher.weights]
    student = attach_teacher(student_from_teacher(teacher, 1), teacher, hidden_weight=0.5)
    student.compile(optimizer=keras.optimizers.AdamW(1e-2))
    start = [w.numpy().copy() for w in student.trainable_weights]
    student.fit(TEXTS, LABELS, batch_size=3, epochs=2, verbose=0)
    for a, b in zip(before, teacher.weights):
        np.testing.assert_array_equal(a, b.numpy())
    assert any(not np.array_equal(a, b.numpy()) for a, b in zip(start, student.trainable_weights))
    student.save(tmp_path / "student.keras")
    reloaded = keras.models.load_model(tmp_path / "student.keras")
    assert len(reloaded.weights) == len(student.weights) < len(teacher.weights)
    assert reloaded._distillation is None
    ids = student.preprocessor(TEXTS)
    np.testing.assert_allclose(logits(reloaded, ids), logits(student, ids), atol=1e-6)


def test_mismatched_teachers_are_refused(make_backbone, tokenizer):
    from keras_encoder.adapters import enable_prefix_tuning
    from keras_encoder.models import EncoderTagger

    teacher = make_teacher(make_backbone, tokenizer)
    other = make_teacher(make_backbone, tokenizer, names=["a", "b"])
    with pytest.raises(ConfigError, match=r"The teacher's labels \(negative, positive\) differ from the student's"):
        attach_teacher(student_from_teacher(other, 1), teacher)
    narrow = make_teacher(make_backbone, tokenizer, hidden_dim=8)
    with pytest.raises(ConfigError, match="needs teacher and student of the same width; received 16 and 8"):
        attach_teacher(student_from_teacher(narrow, 1), teacher, hidden_weight=1.0)
    tagger = EncoderTagger(make_backbone(num_layers=2), ["O", "B-X", "I-X"])
    with pytest.raises(ConfigError, match="A teacher must be an EncoderClassifier; received a EncoderTagger"):
        student_from_teacher(tagger, 1)
    enable_prefix_tuning(teacher, 2)
    with pytest.raises(ConfigError, match=r"has a prefix \(prefix tuning\)"):
        student_from_teacher(teacher, 1)
    with pytest.raises(ConfigError, match=r"blocks must be 2 ascending indices below 3. Received: \[2, 1\]"):
        student_from_teacher(other, 2, blocks=[2, 1])
    for bad in ({"temperature": 0}, {"weight": 1.5}, {"hidden_weight": -1}, {"weight": float("nan")}):
        with pytest.raises(ConfigError, match="--distill-"):
            attach_teacher(student_from_teacher(other, 1), other, **bad)


def fake_run(path, **config):
    path.mkdir()
    for name in ("model.keras", "vocab.txt", "metrics.json"):
        (path / name).write_text("{}")
    values = {"task": "classify", "layers": 6, "hidden": 384, "heads": 12, "intermediate": 1536,
              "position": "learned", "max_length": 128, "vocabulary_size": 30522, "lora_rank": 0,
              "prefix_length": 0}
    values.update(config)
    (path / "config.json").write_text(json.dumps(values))
    return str(path)


def test_teacher_runs_are_checked_before_anything_loads(tmp_path):
    with pytest.raises(DataError, match=r"--teacher .*nothing: not a finished run directory of train.py"):
        teacher_run_config(tmp_path / "nothing")
    with pytest.raises(DataError, match="is a tag run; distillation teaches classifiers only"):
        teacher_run_config(fake_run(tmp_path / "tagger", task="tag"))
    with pytest.raises(DataError, match="was trained with --lora-rank 8; distil from a fully fine-tuned run"):
        teacher_run_config(fake_run(tmp_path / "lora", lora_rank=8))
    assert teacher_run_config(fake_run(tmp_path / "good"))["layers"] == 6


@pytest.mark.parametrize(
    "flags, message",
    [
        ({"init": "somewhere"}, r"--init does not combine with it"),
        ({"lora_rank": 4}, r"--lora-rank does not combine with it"),
        ({"distill_weight": 1.5}, r"--distill-weight must be in \[0, 1\]"),
        ({"distill_temperature": 0.0}, r"--distill-temperature must be positive"),
        ({"layers": 7}, r"--layers must be between 1 and the teacher's 6 blocks"),
        ({"hidden": 128}, r"--hidden 128 contradicts --teacher .*good, whose model has hidden 384"),
        ({"max_length": 512}, r"--max-length 512 is longer than --teacher .*good holds positions for \(128\)"),
    ],
)
def test_train_refuses_bad_teacher_flags_before_reading_data(tmp_path, flags, message):
    from keras_encoder.training import train

    teacher = fake_run(tmp_path / "good")
    with pytest.raises(ConfigError, match=message):
        train({"data": str(tmp_path / "never-read.csv"), "teacher": teacher, **flags}, echo=lambda line: None)
