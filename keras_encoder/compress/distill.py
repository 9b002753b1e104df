"""Knowledge distillation: a shallower student trained on a teacher's outputs.

`student_from_teacher(teacher, layers)` builds the student: the teacher
classifier's own architecture with `layers` of its blocks, evenly spaced
and ending at the top one (DistilBERT initializes from every other
teacher block), and every other weight (embeddings, pooler, head) copied.
It shares the teacher's tokenizer, so both read the same token ids.

`attach_teacher(student, teacher)` makes the student's training loss

    (1 - weight) * CE(labels, student)
        + weight * T^2 * KL(softmax(teacher / T) || softmax(student / T))
        + hidden_weight * MSE(teacher's last hidden states, student's)

the last term over real tokens only (padding excluded). The teacher is
frozen, runs in inference mode, and is not part of the student: the
student's checkpoints, `.keras` file and export hold the student alone.
Validation and test scores are the student's own.

`keras.distillation` supplies the logits term (`LogitsDistillation`). Its
`Distiller` model is not used: it makes a new model around teacher and
student, so checkpoints, callbacks (attention maps, the confusion matrix)
and the export would see the pair rather than the task model; it ignores
sample weights; and its feature loss averages over padding positions.

    python train.py --data wordnet-supersenses --teacher logs/minilm-wn-e2-lr5e-5-1234 --layers 2

References:
    - [Hinton et al., 2015](https://arxiv.org/abs/1503.02531)
    - [Sanh et al., 2019 (DistilBERT)](https://arxiv.org/abs/1910.01108)
"""

import copy
import os

import numpy as np

from keras_encoder.errors import ConfigError, DataError


def student_blocks(teacher_layers, layers):
    """Which teacher blocks initialize a `layers`-block student: evenly spaced, the top one last.

    For example 2 of 6 gives `[2, 5]`, 3 of 6 gives `[1, 3, 5]`.
    """
    if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= teacher_layers:
        raise ConfigError(
            f"--layers must be between 1 and the teacher's {teacher_layers} blocks for a student. "
            f"Received: {layers!r}"
        )
    return [int(round((index + 1) * teacher_layers / layers)) - 1 for index in range(layers)]


def block_names(model):
    """The backbone's `TransformerEncoderBlock` names, in order (`block_0`, ...)."""
    from keras_encoder.layers import TransformerEncoderBlock

    return [layer.name for layer in model.backbone.layers if isinstance(layer, TransformerEncoderBlock)]


def student_from_teacher(teacher, layers, blocks=None):
    """A copy of the classifier `teacher` with `layers` of its blocks.

    Args:
        teacher: an `EncoderClassifier` whose backbone chains
            `TransformerEncoderBlock`s `block_0` ... (`build_encoder` or a
            BERT checkpoint), without LoRA adapters, prefixes or pruned heads.
        layers: int. Blocks the student keeps.
        blocks: list of teacher block indices to copy, ascending
            (default: `student_blocks`).

    Returns:
        A new `EncoderClassifier` of the same preprocessor and labels,
        its blocks renamed `block_0` ... and initialized from the chosen
        teacher blocks; every other weight is the teacher's.
    """
    from keras_encoder.compress.prune import prunable_attention
    from keras_encoder.models import EncoderClassifier

    if not isinstance(teacher, EncoderClassifier):
        raise ConfigError(f"A teacher must be an EncoderClassifier; received a {type(teacher).__name__}.")
    attention = prunable_attention(teacher)  # refuses adapters and prefixes
    if len({layer.num_heads for layer in attention.values()}) > 1:
        raise ConfigError("The teacher's blocks have differing heads (a pruned model); distil from the unpruned run.")
    names = block_names(teacher)
    blocks = student_blocks(len(names), layers) if blocks is None else list(blocks)
    if len(blocks) != layers or sorted(set(blocks)) != blocks or not all(0 <= b < len(names) for b in blocks):
        raise ConfigError(f"blocks must be {layers} ascending indices below {len(names)}. Received: {blocks}")

    config = copy.deepcopy(teacher.get_config())
    backbone = config["backbone"]["config"]
    layer_entries = backbone["layers"]
    kept_names = {names[index]: f"block_{position}" for position, index in enumerate(blocks)}
    first_input = _history_names(
        next(entry for entry in layer_entries if entry["config"]["name"] == names[0])["inbound_nodes"]
    )
    # A removed block's output stands for the last kept block before it
    # (or the first block's input): the chain closes over the gap.
    stands_for, last = {}, None
    for name in names:
        last = kept_names.get(name, last)
        stands_for[name] = last
    block_input = next(name for name in first_input if name not in names)

    def rename(history_name):
        if history_name in stands_for:
            return stands_for[history_name] or block_input
        return history_name

    backbone["layers"] = []
    for entry in layer_entries:
        name = entry["config"]["name"]
        if name in names and name not in kept_names:
            continue
        entry = _map_histories(entry, rename)
        if name in kept_names:
            entry["config"]["name"] = kept_names[name]
            if "name" in entry:
                entry["name"] = kept_names[name]
        backbone["layers"].append(entry)
    backbone["output_layers"] = _map_histories(backbone["output_layers"], rename, bare=True)
    student = type(teacher).from_config(config)
    source = {kept_names[name]: name for name in kept_names}
    for layer in student.backbone.layers:
        _copy_weights(teacher.backbone.get_layer(source.get(layer.name, layer.name)), layer)
    for layer in student.layers:
        if layer is not student.get_layer(student.backbone.name) and layer.weights:
            _copy_weights(teacher.get_layer(layer.name), layer)
    return student


def _copy_weights(source, target):
    values = source.get_weights()
    if [np.shape(v) for v in values] != [tuple(w.shape) for w in target.weights]:
        raise ConfigError(f"Cannot copy {source.name} into {target.name}: their weights differ in shape.")
    target.set_weights(values)


def _history_names(value):
    """Every layer name a node list or history refers to."""
    found = []
    if isinstance(value, dict):
        history = value.get("config", {}).get("keras_history") if value.get("class_name") == "__keras_tensor__" else None
        if history:
            found.append(history[0])
        for item in value.values():
            found.extend(_history_names(item))
    elif isinstance(value, (list, tuple)):
        for item in value:
            found.extend(_history_names(item))
    return found


def _map_histories(value, rename, bare=False):
    """`value` with every `keras_history` (or, with `bare`, `[name, 0, 0]` triple) renamed."""
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__" and "keras_history" in value.get("config", {}):
            value = copy.deepcopy(value)
            history = value["config"]["keras_history"]
            value["config"]["keras_history"] = type(history)([rename(history[0]), *history[1:]])
            return value
        return {key: _map_histories(item, rename, bare) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        if bare and len(value) == 3 and isinstance(value[0], str) and list(value[1:]) == [0, 0]:
            return type(value)([rename(value[0]), 0, 0])
        return type(value)(_map_histories(item, rename, bare) for item in value)
    return value


class Distillation:
    """The teacher's part of a student's training loss (see the module docstring).

    Args:
        teacher: the frozen `EncoderClassifier` teacher.
        temperature: float > 0. Softmax temperature of the logits term.
        weight: float in `[0, 1]`. Share of the logits term; the label
            loss gets `1 - weight`.
        hidden_weight: float >= 0. Weight of the last-hidden-state term
            (0: off). Needs teacher and student of the same width.
    """

    def __init__(self, teacher, temperature=2.0, weight=0.5, hidden_weight=0.0):
        import keras

        check_distillation_values(temperature, weight, hidden_weight)
        self.teacher = teacher
        self.teacher.trainable = False
        self.temperature = float(temperature)
        self.weight = float(weight)
        self.hidden_weight = float(hidden_weight)
        # The loss given as an instance: with its default, the string
        # "kl_divergence", Keras 3.15 resolves a function that its softmax
        # step does not recognise, and compares the raw logits instead.
        self.logits_loss = keras.distillation.LogitsDistillation(
            temperature=self.temperature, loss=keras.losses.KLDivergence()
        )

    def loss(self, student, token_ids, student_logits, label_loss):
        """The student's training loss from its label loss and the teacher's outputs."""
        from keras import ops

        if not self.weight and not self.hidden_weight:
            return label_loss  # the labels alone: the teacher need not run
        teacher_out = backbone_outputs(self.teacher.backbone, token_ids, training=False)
        teacher_logits = self.teacher.get_layer("logits")(teacher_out["pooled_output"])
        teacher_logits = ops.stop_gradient(teacher_logits)
        total = (1.0 - self.weight) * label_loss
        total = total + self.weight * self.logits_loss.compute_loss(teacher_logits, student_logits)
        if self.hidden_weight:
            student_hidden = backbone_outputs(student.backbone, token_ids, training=True)["sequence_output"]
            teacher_hidden = ops.stop_gradient(teacher_out["sequence_output"])
            real = ops.cast(ops.not_equal(token_ids, 0), student_hidden.dtype)  # (B, T)
            per_token = ops.mean(ops.square(student_hidden - teacher_hidden), axis=-1)  # (B, T)
            hidden = ops.sum(per_token * real) / ops.maximum(ops.sum(real), 1.0)
            total = total + self.hidden_weight * hidden
        return total


def check_distillation_values(temperature, weight, hidden_weight):
    """Range checks of the distillation values, naming their flags."""
    for flag, value, low in (("--distill-temperature", temperature, None), ("--distill-weight", weight, 0.0),
                             ("--distill-hidden-weight", hidden_weight, 0.0)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise ConfigError(f"{flag} must be a finite number. Received: {value!r}")
    if temperature <= 0:
        raise ConfigError(f"--distill-temperature must be positive. Received: {temperature!r}")
    if not 0 <= weight <= 1:
        raise ConfigError(f"--distill-weight must be in [0, 1]. Received: {weight!r}")
    if hidden_weight < 0:
        raise ConfigError(f"--distill-hidden-weight must be non-negative. Received: {hidden_weight!r}")


def backbone_outputs(backbone, token_ids, training):
    """The backbone's output dict on `(B, T)` token ids (a BERT-style backbone fed as the task models feed it)."""
    from keras import ops

    if isinstance(backbone.input, dict):
        inputs = {
            "token_ids": token_ids,
            "segment_ids": ops.zeros_like(token_ids),
            "padding_mask": ops.cast(ops.not_equal(token_ids, 0), "int32"),
        }
    else:
        inputs = token_ids
    return backbone(inputs, training=training)


def attach_teacher(student, teacher, temperature=2.0, weight=0.5, hidden_weight=0.0):
    """Train `student` (an `EncoderClassifier`) against `teacher` from now on.

    The teacher is frozen and held outside the student's state: the
    student saves, checkpoints and exports alone. Call before `compile`.
    `attach_teacher(student, None)` detaches it. Returns the student.
    """
    if teacher is None:
        object.__setattr__(student, "_distillation", None)
        return student
    if teacher.num_classes != student.num_classes or list(teacher.label_names) != list(student.label_names):
        raise ConfigError(
            f"The teacher's labels ({', '.join(teacher.label_names)}) differ from the student's "
            f"({', '.join(student.label_names)}); a teacher must be trained on the same classes."
        )
    if hidden_weight:
        widths = [m.backbone.get_layer(block_names(m)[-1]).output.shape[-1] for m in (teacher, student)]
        if widths[0] != widths[1]:
            raise ConfigError(
                f"--distill-hidden-weight needs teacher and student of the same width; received {widths[0]} "
                f"and {widths[1]}."
            )
    object.__setattr__(student, "_distillation", Distillation(teacher, temperature, weight, hidden_weight))
    return student


def teacher_run_config(path):
    """The config of the finished classification run `path`, checked as a teacher (JSON only)."""
    from keras_encoder.training.run_dir import METRICS_FILE, read_json

    path = os.fspath(path)
    needed = ("model.keras", "vocab.txt", "config.json", METRICS_FILE)
    if not os.path.isdir(path) or not all(os.path.isfile(os.path.join(path, name)) for name in needed):
        raise DataError(
            f"--teacher {path}: not a finished run directory of train.py ({', '.join(needed)})."
        )
    config = read_json(os.path.join(path, "config.json"))
    if config.get("task") != "classify":
        raise DataError(f"--teacher {path} is a {config.get('task')} run; distillation teaches classifiers only.")
    for flag in ("lora_rank", "prefix_length"):
        if config.get(flag):
            raise DataError(
                f"--teacher {path} was trained with --{flag.replace('_', '-')} {config[flag]}; "
                "distil from a fully fine-tuned run."
            )
    return config


def load_teacher(path, sequence_length):
    """`(teacher model, tokenizer)` of the finished classification run `path`."""
    import keras

    import keras_encoder.models  # noqa: F401  (registers the layers for loading)
    from keras_encoder.checkpoints import tokenizer_of_length
    from keras_encoder.text import Tokenizer

    teacher_run_config(path)
    path = os.fspath(path)
    teacher = keras.models.load_model(os.path.join(path, "model.keras"))
    return teacher, tokenizer_of_length(Tokenizer.load(path), sequence_length)
