"""`AdapterCheckpoints`: LoRA adapters survive a resume through BackupAndRestore."""

import keras
import numpy as np

from keras_encoder.adapters import enable_lora
from keras_encoder.models import EncoderClassifier
from keras_encoder.training.callbacks import AdapterCheckpoints

IDS = np.array([[2, 7, 8, 9, 3, 0], [2, 11, 3, 0, 0, 0]] * 4, "int32")
LABELS = np.array([0, 1] * 4)


def _adapted(make_backbone, base_weights=None):
    classifier = EncoderClassifier(make_backbone(num_layers=2), num_classes=2)
    if base_weights is not None:
        classifier.set_weights(base_weights)
    enable_lora(classifier, rank=2)
    classifier.compile(optimizer=keras.optimizers.AdamW(1e-2))
    return classifier


def _callbacks(tmp_path):
    checkpoints = AdapterCheckpoints(str(tmp_path / "adapters"), str(tmp_path / "backup"))
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"), delete_checkpoint=False)
    return checkpoints, [checkpoints, backup, checkpoints.restorer()]


def _state(model):
    return {variable.path: keras.ops.convert_to_numpy(variable) for variable in model.weights}


def test_a_resumed_lora_run_gets_its_adapters_back(make_backbone, tmp_path):
    first = EncoderClassifier(make_backbone(num_layers=2), num_classes=2)
    base = first.get_weights()
    trained = _adapted(make_backbone, base)
    checkpoints, callbacks = _callbacks(tmp_path)
    trained.fit(IDS, LABELS, batch_size=4, epochs=2, callbacks=callbacks, verbose=0)
    assert sorted(p.name for p in (tmp_path / "adapters").iterdir()) == [
        "adapters-001.safetensors", "adapters-002.safetensors",
    ]

    # A new process: the base model, adapters enabled, fit resumes after epoch 2.
    resumed = _adapted(make_backbone, base)
    _, callbacks = _callbacks(tmp_path)
    resumed.fit(IDS, LABELS, batch_size=4, epochs=2, callbacks=callbacks, verbose=0)
    expected, found = _state(trained), _state(resumed)
    adapters = [path for path in expected if "lora_kernel" in path]
    assert len(adapters) == 8 and all(np.any(expected[path]) for path in adapters)
    for path in expected:  # raw kernels, adapters and head, as they were
        np.testing.assert_allclose(found[path], expected[path], atol=1e-6, err_msg=path)

    # And training goes on from there: the adapters still move.
    resumed.fit(IDS, LABELS, batch_size=4, epochs=3, callbacks=callbacks, verbose=0)
    moved = _state(resumed)
    assert any(not np.allclose(moved[path], expected[path]) for path in adapters)
