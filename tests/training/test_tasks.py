"""What a run does per task: which data is which task, what it feeds `fit`, what it monitors."""

import numpy as np
import pytest

from keras_encoder.errors import ConfigError
from keras_encoder.text import Tokenizer
from keras_encoder.training.config import TrainConfig
from keras_encoder.training.tasks import load_task, task_of
from tests.training.test_tag_cli import write_conll
from tests.training.test_train_cli import write_corpus


def quiet(*_):
    pass


def test_the_data_name_picks_the_task():
    assert task_of("reviews") == "classify"
    assert task_of("my.csv") == "classify"
    assert task_of("peoples-daily-ner") == task_of("peoples-daily-pos") == "tag"
    assert task_of("ner.conll") == task_of("NER.BIO") == "tag"
    assert task_of("pos.tsv", "tag") == "tag"  # --task (or the preset) chooses for other files


def unk_count(dataset, unk_id):
    return sum(int(np.sum(batch[0].numpy() == unk_id)) for batch in dataset)


def test_token_dropout_reaches_training_batches_only(tmp_path):
    path = tmp_path / "reviews.csv"
    write_corpus(path, rows=200)
    task = load_task(str(path), "classify", echo=quiet)
    tokenizer = Tokenizer.learn(task.texts("train"), vocabulary_size=100, sequence_length=32)
    task.prepare(tokenizer, TrainConfig(token_dropout=0.3, batch_size=16))
    for split in ("train", "validation", "test"):
        unknown = int(np.sum(task.ids[split].flat_values.numpy() == tokenizer.unk_id))
        seen = unk_count(task.datasets[split], tokenizer.unk_id)
        if split == "train":
            regular = int(np.sum(task.ids[split].flat_values.numpy() >= tokenizer.first_regular_id))
            assert seen - unknown == pytest.approx(0.3 * regular, rel=0.2)  # about 30% dropped
        else:
            assert seen == unknown  # evaluation batches are the texts as they are
    # [CLS] and [SEP] are never dropped.
    for token_ids, _ in task.datasets["train"]:
        ids = token_ids.numpy()
        assert np.all(ids[:, 0] == tokenizer.cls_id)


def test_tagging_task_monitors_what_it_computes(tmp_path):
    path = tmp_path / "toy.conll"
    write_conll(path, sentences=60)
    task = load_task(str(path), "tag", echo=quiet)
    assert (task.name, task.scheme) == ("tag", "bio")
    assert task.monitor("val_entity_f1") == ("val_entity_f1", "max")
    assert task.monitor("val_loss") == ("val_loss", "min")
    # With a CRF the per-token argmax accuracy is not its prediction, so it is not computed.
    with pytest.raises(ConfigError, match="--monitor val_accuracy is not computed for BIO tagging"):
        task.monitor("val_accuracy", crf=True)
    assert task.monitor("val_accuracy", crf=False) == ("val_accuracy", "max")
    with pytest.raises(ConfigError, match="--monitor val_macro_f1 is not computed for BIO tagging"):
        task.monitor("val_macro_f1")
    sizes = task.data_sizes()
    assert sizes["num_tags"] == 7 and sizes["num_train_units"] > sizes["num_train_examples"] > 0


def test_a_tagging_corpus_is_not_classified():
    with pytest.raises(ConfigError, match="--data peoples-daily-ner is a tagging corpus"):
        load_task("peoples-daily-ner", "classify", echo=quiet)
