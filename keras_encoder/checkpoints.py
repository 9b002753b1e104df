"""Hugging Face BERT checkpoints in and out: `load_pretrained`, `save_pretrained`.

A checkpoint is a directory in the Hugging Face BERT layout:
`config.json` (`model_type` "bert"), `model.safetensors`, `vocab.txt` and
`tokenizer_config.json`. Weights are read and written with
`safetensors.numpy`: no network, no PyTorch.

Every tensor is mapped in one table (`_weight_table`): our variable, the
checkpoint's tensor name, and the change of layout between them (PyTorch's
`Linear` stores `(out, in)`; our `EinsumDense` kernels are `(in, heads,
head_dim)` and `(heads, head_dim, out)`). Each shape is checked before
anything is assigned.
"""

import json
import os

import numpy as np

from keras_encoder.errors import DataError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
VOCABULARY_FILE = "vocab.txt"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
# Hugging Face names of the exact (erf) GELU, the only activation our
# blocks match exactly.
_GELU = ("gelu",)


def bert_encoder_config(hf_config, source="config.json"):
    """Our `EncoderConfig` for a Hugging Face BERT `config.json` dict."""
    from keras_encoder.models.config import EncoderConfig

    def need(key):
        if key not in hf_config:
            raise DataError(f"{source}: missing {key!r}, which a BERT config.json holds.")
        return hf_config[key]

    model_type = hf_config.get("model_type")
    if model_type != "bert":
        raise DataError(
            f"{source}: model_type {model_type!r} is not supported; only 'bert' checkpoints load."
        )
    activation = need("hidden_act")
    if activation not in _GELU:
        raise DataError(
            f"{source}: hidden_act {activation!r} is not supported; BERT checkpoints "
            "with the exact (erf) 'gelu' load."
        )
    position_type = hf_config.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise DataError(
            f"{source}: position_embedding_type {position_type!r} is not supported; "
            "only 'absolute' (learned) positions load."
        )
    return EncoderConfig(
        vocabulary_size=need("vocab_size"),
        max_length=need("max_position_embeddings"),
        hidden_dim=need("hidden_size"),
        num_heads=need("num_attention_heads"),
        num_layers=need("num_hidden_layers"),
        intermediate_dim=need("intermediate_size"),
        dropout=float(hf_config.get("hidden_dropout_prob", 0.1)),
        position="learned",
        norm_first=False,
        embedding_norm=True,
        bigram_buckets=0,
        activation="gelu",
        pooling="cls",
        layer_norm_epsilon=float(hf_config.get("layer_norm_eps", 1e-12)),
        segment_vocabulary_size=int(hf_config.get("type_vocab_size", 2)),
        pooler=True,
    )


def _weight_table(backbone, config):
    """`[(variable, checkpoint name, to_ours, to_theirs)]` for every weight."""
    heads, head_dim, hidden = config.num_heads, config.head_dim, config.hidden_dim

    def same(array):
        return array

    def linear_in(array):  # (out, in) -> (in, out)
        return array.T

    def qkv_kernel(array):  # (N*H, D) -> (D, N, H)
        return array.T.reshape(hidden, heads, head_dim)

    def qkv_kernel_back(array):  # (D, N, H) -> (N*H, D)
        return array.reshape(hidden, heads * head_dim).T

    def qkv_bias(array):  # (N*H,) -> (N, H)
        return array.reshape(heads, head_dim)

    def qkv_bias_back(array):
        return array.reshape(heads * head_dim)

    def out_kernel(array):  # (D, N*H) -> (N, H, D)
        return array.T.reshape(heads, head_dim, hidden)

    def out_kernel_back(array):  # (N, H, D) -> (D, N*H)
        return array.reshape(heads * head_dim, hidden).T

    embedding = backbone.get_layer("embedding")
    norm = backbone.get_layer("embedding_norm")
    table = [
        (embedding.token_embedding.embeddings, "embeddings.word_embeddings.weight", same, same),
        (embedding.position_embedding.position_embeddings, "embeddings.position_embeddings.weight", same, same),
        (backbone.get_layer("segment_embedding").embeddings, "embeddings.token_type_embeddings.weight", same, same),
        (norm.gamma, "embeddings.LayerNorm.weight", same, same),
        (norm.beta, "embeddings.LayerNorm.bias", same, same),
    ]
    for index in range(config.num_layers):
        block = backbone.get_layer(f"block_{index}")
        prefix = f"encoder.layer.{index}."
        attention = block.attention
        for ours, theirs in (
            (attention.query_dense, "attention.self.query"),
            (attention.key_dense, "attention.self.key"),
            (attention.value_dense, "attention.self.value"),
        ):
            table.append((ours.kernel, f"{prefix}{theirs}.weight", qkv_kernel, qkv_kernel_back))
            table.append((ours.bias, f"{prefix}{theirs}.bias", qkv_bias, qkv_bias_back))
        table += [
            (attention.output_dense.kernel, f"{prefix}attention.output.dense.weight", out_kernel, out_kernel_back),
            (attention.output_dense.bias, f"{prefix}attention.output.dense.bias", same, same),
            (block.attention_norm.gamma, f"{prefix}attention.output.LayerNorm.weight", same, same),
            (block.attention_norm.beta, f"{prefix}attention.output.LayerNorm.bias", same, same),
            (block.ffn_inner.kernel, f"{prefix}intermediate.dense.weight", linear_in, linear_in),
            (block.ffn_inner.bias, f"{prefix}intermediate.dense.bias", same, same),
            (block.ffn_outer.kernel, f"{prefix}output.dense.weight", linear_in, linear_in),
            (block.ffn_outer.bias, f"{prefix}output.dense.bias", same, same),
            (block.ffn_norm.gamma, f"{prefix}output.LayerNorm.weight", same, same),
            (block.ffn_norm.beta, f"{prefix}output.LayerNorm.bias", same, same),
        ]
    pooler = backbone.get_layer("pooler")
    table += [
        (pooler.kernel, "pooler.dense.weight", linear_in, linear_in),
        (pooler.bias, "pooler.dense.bias", same, same),
    ]
    return table


def load_pretrained(path, sequence_length=128):
    """A backbone and its tokenizer from a Hugging Face BERT directory.

    Args:
        path: directory with `config.json`, `model.safetensors`,
            `vocab.txt` and `tokenizer_config.json`.
        sequence_length: int. The tokenizer's sequence length (`[CLS]` and
            `[SEP]` included), at most the checkpoint's
            `max_position_embeddings`. Defaults to `128`.

    Returns:
        `(backbone, tokenizer)`: a functional `keras.Model` from a dict of
        `token_ids`, `segment_ids` and `padding_mask` to `sequence_output`
        and `pooled_output`, and a `keras_encoder.text.Tokenizer`.

    Raises:
        DataError: one sentence naming a missing file, an unsupported
            `model_type` or activation, or a tensor whose shape does not fit.
    """
    from safetensors.numpy import load_file

    from keras_encoder.models.backbone import build_encoder
    from keras_encoder.text import Tokenizer

    path = os.fspath(path)
    for name in (CONFIG_FILE, WEIGHTS_FILE, VOCABULARY_FILE):
        if not os.path.isfile(os.path.join(path, name)):
            raise DataError(f"{path}: no {name}; a BERT checkpoint directory holds {CONFIG_FILE}, "
                            f"{WEIGHTS_FILE}, {VOCABULARY_FILE} and {TOKENIZER_CONFIG_FILE}.")
    config_path = os.path.join(path, CONFIG_FILE)
    hf_config = _read_json(config_path)
    config = bert_encoder_config(hf_config, source=config_path)
    if not 3 <= sequence_length <= config.max_length:
        raise DataError(
            f"sequence_length must be between 3 and the checkpoint's max_position_embeddings "
            f"({config.max_length}). Received: sequence_length={sequence_length}"
        )
    backbone = build_encoder(config, name="bert_backbone")
    weights_path = os.path.join(path, WEIGHTS_FILE)
    try:
        tensors = load_file(weights_path)
    except Exception as error:  # safetensors raises its own error types
        raise DataError(f"{weights_path}: not a readable safetensors file ({error}).") from None
    assignments = []
    for variable, name, to_ours, _ in _weight_table(backbone, config):
        if name not in tensors:
            raise DataError(f"{weights_path}: tensor {name!r} is missing.")
        value = to_ours(np.asarray(tensors[name], dtype="float32"))
        if tuple(value.shape) != tuple(variable.shape):
            raise DataError(
                f"{weights_path}: tensor {name!r} has shape {tuple(tensors[name].shape)}, which does "
                f"not fit {variable.path} {tuple(variable.shape)} of a model built from {CONFIG_FILE}."
            )
        assignments.append((variable, value))
    for variable, value in assignments:
        variable.assign(value)

    tokenizer_config = _read_json(os.path.join(path, TOKENIZER_CONFIG_FILE), required=False) or {}
    vocabulary = _read_vocabulary(os.path.join(path, VOCABULARY_FILE))
    if len(vocabulary) != config.vocabulary_size:
        raise DataError(
            f"{os.path.join(path, VOCABULARY_FILE)}: {len(vocabulary)} tokens, but {CONFIG_FILE} "
            f"says vocab_size {config.vocabulary_size}."
        )
    try:
        tokenizer = Tokenizer(
            vocabulary,
            sequence_length=sequence_length,
            lowercase=bool(tokenizer_config.get("do_lower_case", True)),
            normalization="bert",
        )
    except Exception as error:
        raise DataError(f"{os.path.join(path, VOCABULARY_FILE)}: {error}") from None
    return backbone, tokenizer


def save_pretrained(backbone, tokenizer, path):
    """Write `backbone` and `tokenizer` as a Hugging Face BERT directory.

    The backbone must be BERT-style (`load_pretrained`'s, or one built from
    an `EncoderConfig` like `bert_encoder_config`'s). `transformers`'
    `BertModel.from_pretrained(path)` loads the result.
    """
    from safetensors.numpy import save_file

    from keras_encoder.models.config import EncoderConfig

    config = _config_of(backbone, EncoderConfig)
    os.makedirs(path, exist_ok=True)
    tensors = {
        name: np.ascontiguousarray(to_theirs(np.asarray(variable.numpy(), dtype="float32")))
        for variable, name, _, to_theirs in _weight_table(backbone, config)
    }
    save_file(tensors, os.path.join(path, WEIGHTS_FILE), metadata={"format": "pt"})
    hf_config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": config.vocabulary_size,
        "hidden_size": config.hidden_dim,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "intermediate_size": config.intermediate_dim,
        "hidden_act": "gelu",
        "hidden_dropout_prob": config.dropout,
        "attention_probs_dropout_prob": config.dropout,
        "max_position_embeddings": config.max_length,
        "type_vocab_size": config.segment_vocabulary_size,
        "layer_norm_eps": config.layer_norm_epsilon,
        "pad_token_id": tokenizer.pad_id,
        "position_embedding_type": "absolute",
        "initializer_range": 0.02,
    }
    with open(os.path.join(path, CONFIG_FILE), "w", encoding="utf-8") as handle:
        json.dump(hf_config, handle, indent=2)
    with open(os.path.join(path, VOCABULARY_FILE), "w", encoding="utf-8", newline="\n") as handle:
        handle.write("".join(token + "\n" for token in tokenizer.vocabulary))
    with open(os.path.join(path, TOKENIZER_CONFIG_FILE), "w", encoding="utf-8") as handle:
        json.dump(
            {
                "tokenizer_class": "BertTokenizer",
                "do_lower_case": tokenizer.lowercase,
                "model_max_length": config.max_length,
                "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                "cls_token": "[CLS]", "mask_token": "[MASK]",
            },
            handle,
            indent=2,
        )


def _config_of(backbone, config_class):
    """The `EncoderConfig` a BERT-style backbone was built from, read off its layers."""
    embedding = backbone.get_layer("embedding")
    block = backbone.get_layer("block_0")
    try:
        segment = backbone.get_layer("segment_embedding")
        norm = backbone.get_layer("embedding_norm")
        backbone.get_layer("pooler")
    except ValueError:
        raise DataError(
            "save_pretrained needs a BERT-style backbone (segment embeddings, an embedding "
            "LayerNorm and a pooler), such as load_pretrained's."
        ) from None
    if embedding.position != "learned" or block.norm_first or embedding.bigram_buckets:
        raise DataError(
            "save_pretrained needs learned positions, post-norm blocks and no token-pair "
            "embeddings, as BERT has."
        )
    blocks = [layer for layer in backbone.layers if layer.name.startswith("block_")]
    for other in blocks:
        if other.num_heads != block.num_heads or other.key_dim is not None:
            raise DataError(
                f"save_pretrained needs every block to have the same full set of heads, as BERT has; "
                f"{other.name} has {other.num_heads} heads of another size (a pruned model)."
            )
        if other.prefix_length:
            raise DataError(
                f"save_pretrained cannot write prefixes (prefix tuning) in BERT's layout; "
                f"{other.name} has {other.prefix_length}."
            )
    num_layers = len(blocks)
    return config_class(
        vocabulary_size=embedding.vocabulary_size,
        max_length=embedding.sequence_length,
        hidden_dim=embedding.hidden_dim,
        num_heads=block.num_heads,
        num_layers=num_layers,
        intermediate_dim=block.intermediate_dim,
        dropout=block.dropout,
        position="learned",
        embedding_norm=True,
        layer_norm_epsilon=norm.epsilon,
        segment_vocabulary_size=segment.input_dim,
        pooler=True,
    )


def _read_json(path, required=True):
    try:
        with open(path, encoding="utf-8") as handle:
            values = json.load(handle)
    except FileNotFoundError:
        if required:
            raise DataError(f"{path}: file not found.") from None
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not valid JSON ({error}).") from None
    if not isinstance(values, dict):
        raise DataError(f"{path}: expected a JSON object.")
    return values


def _read_vocabulary(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return [line.rstrip("\n").rstrip("\r") for line in handle if line.rstrip("\n\r")]
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 ({error}).") from None


# === Starting a training run from a checkpoint (`train.py --init`) ===

_ARCHITECTURE_FIELDS = (
    "vocabulary_size", "layers", "hidden", "heads", "intermediate", "position", "norm_first",
    "embedding_norm", "bigram_buckets", "activation", "pooling",
)


def _is_run_directory(path):
    return os.path.isfile(os.path.join(path, "model.keras")) and os.path.isfile(
        os.path.join(path, "vocab.txt")
    ) and not os.path.isfile(os.path.join(path, WEIGHTS_FILE))


def init_run_config(path):
    """The `config.json` of our run directory at `path`, or `{}` for anything else."""
    path = os.fspath(path)
    if not os.path.isdir(path) or not _is_run_directory(path):
        return {}
    return _read_json(os.path.join(path, CONFIG_FILE))


def init_values(path):
    """The `TrainConfig` values a start from `path` fixes (its architecture).

    `max_positions`, when present, is the longest sequence the checkpoint's
    position table holds (not a `TrainConfig` field: `max_length` must not
    exceed it).

    Reads only JSON, so a bad path fails before any data is loaded.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise DataError(f"--init {path}: no such directory.")
    if _is_run_directory(path):
        config = _read_json(os.path.join(path, CONFIG_FILE))
        if config.get("prefix_length"):
            raise DataError(
                f"--init {path} was trained with --prefix-length {config['prefix_length']}: its prefixes "
                f"belong to that run; start from the checkpoint it started from"
                + (f" ({config['init']})." if config.get("init") else ".")
            )
        values = {field: config[field] for field in _ARCHITECTURE_FIELDS if field in config}
        if config.get("position") == "learned":
            values["max_positions"] = config["max_length"]
        return values
    if os.path.isfile(os.path.join(path, "model.keras")) and not os.path.isfile(os.path.join(path, WEIGHTS_FILE)):
        raise DataError(
            f"--init {path}: a model.keras without {VOCABULARY_FILE}, as the compress commands write "
            "(pruned or quantized models); give a run directory of train.py or a BERT checkpoint."
        )
    config_path = os.path.join(path, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise DataError(
            f"--init {path}: neither a BERT checkpoint ({CONFIG_FILE}, {WEIGHTS_FILE}, "
            f"{VOCABULARY_FILE}) nor a finished run directory (model.keras, vocab.txt)."
        )
    config = bert_encoder_config(_read_json(config_path), source=config_path)
    return {
        "max_positions": config.max_length,
        "vocabulary_size": config.vocabulary_size,
        "layers": config.num_layers,
        "hidden": config.hidden_dim,
        "heads": config.num_heads,
        "intermediate": config.intermediate_dim,
        "position": config.position,
        "norm_first": config.norm_first,
        "embedding_norm": config.embedding_norm,
        "bigram_buckets": config.bigram_buckets,
        "activation": config.activation,
        "pooling": config.pooling,
    }


def load_init(path, sequence_length):
    """`(backbone, tokenizer)` to start a run from: a BERT directory or a run of ours."""
    path = os.fspath(path)
    if not _is_run_directory(path):
        return load_pretrained(path, sequence_length=sequence_length)
    import keras

    from keras_encoder.text import Tokenizer

    model = keras.models.load_model(os.path.join(path, "model.keras"))
    return model.backbone, tokenizer_of_length(Tokenizer.load(path), sequence_length)


def tokenizer_of_length(tokenizer, sequence_length):
    """`tokenizer`, or a copy of it that cuts sequences at `sequence_length`."""
    from keras_encoder.text import Tokenizer

    if sequence_length == tokenizer.sequence_length:
        return tokenizer
    return Tokenizer(
        tokenizer.vocabulary,
        sequence_length=sequence_length,
        lowercase=tokenizer.lowercase,
        normalization=tokenizer.get_config()["normalization"],
    )
