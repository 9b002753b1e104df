"""Train a Transformer encoder on text and export it.

Examples:

    python train.py                                   # built-in Chinese reviews
    python train.py --epochs 3 --layers 1 --run-name quick
    python train.py --data my.csv --text-column review --label-column stars
    python train.py --data peoples-daily-ner          # built-in Chinese NER
    python train.py --data my_ner.conll --task tag
    python train.py --config my_run.json --learning-rate 5e-4
    tensorboard --logdir logs

Every run writes logs/<run-name>/ (config, vocabulary, TensorBoard events,
checkpoints, metrics.json, a SavedModel in export/). Re-running the same
command resumes an interrupted run.
"""

import argparse
import dataclasses
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_encoder.errors import KerasEncoderError  # noqa: E402
from keras_encoder.training.config import MONITORS, OPTIMIZERS, TAG_SCHEMES, TASKS, TrainConfig  # noqa: E402
from keras_encoder.models.config import POOLING_MODES, POSITION_KINDS  # noqa: E402

HELP = {
    "data": "built-in corpus (reviews, peoples-daily-ner, peoples-daily-pos), "
    "a .csv/.tsv/.jsonl file to classify or a CoNLL file to tag",
    "text_column": "column (or JSON key) holding the text",
    "label_column": "column (or JSON key) holding the label",
    "task": "classify texts, tag tokens, or auto (tag for a tagging corpus or .conll/.bio file)",
    "tag_scheme": "tagging: bio (entity spans, entity F1), plain (token accuracy) or auto",
    "validation_fraction": "fraction held out for early stopping and checkpoints",
    "test_fraction": "fraction held out for the final evaluation",
    "seed": "seed for the split, initialization, dropout and shuffling",
    "vocabulary_size": "largest WordPiece vocabulary to learn",
    "max_length": "tokens per sequence, [CLS]/[SEP] included; longer text is cut",
    "layers": "encoder blocks",
    "hidden": "hidden size",
    "heads": "attention heads (must divide --hidden)",
    "intermediate": "feed-forward width",
    "dropout": "dropout rate",
    "position": "position information (auto: rotary for tagging, sinusoidal otherwise)",
    "pooling": "sentence vector: [CLS] position or mean of tokens",
    "norm_first": "pre-norm blocks instead of post-norm",
    "embedding_norm": "LayerNorm on the embeddings, as in BERT",
    "bigram_buckets": "size of the hashed token-pair embedding table added to "
    "every token's vector (0: none; -1: 32768)",
    "activation": "feed-forward activation",
    "token_dropout": "probability of replacing each training token by [UNK], anew each epoch",
    "crf": "tagging: a linear-chain CRF on the tag logits (learned transitions, Viterbi "
    "decoding); --no-crf scores each token on its own",
    "window_features": "tagging: rows of a hashed table of linear tag scores for "
    "token-window features, added to the encoder's (0: none; -1: 1048576 for tagging, fewer for over 16 tags or a small training set)",
    "window_scale": "tagging: learning-rate multiplier of the window-feature table "
    "(its scores are multiplied by it; -1: 10 for tagging)",
    "ngram_features": "classification: rows of a hashed table of linear class scores "
    "for the text's token 1- to 3-grams, added to the encoder's (0 or -1: none)",
    "pretrain_epochs": "masked-LM pretraining epochs on the training texts first (0: none)",
    "optimizer": "adamw, or sparse_adamw to update only the embedding rows each batch uses",
    "ema": "momentum of an exponential moving average of the weights used for "
    "validation, checkpoints and export (0: off; -1: 0.998 for tagging, off otherwise)",
    "epochs": "most epochs to train (early stopping may end sooner)",
    "batch_size": "examples per batch",
    "learning_rate": "peak learning rate after warm-up",
    "warmup_fraction": "fraction of steps spent warming up",
    "weight_decay": "AdamW weight decay",
    "patience": "epochs without improvement of --monitor before stopping (0: never)",
    "monitor": "validation score that picks the best checkpoint and stops training "
    "(auto: val_loss for classification, val_entity_f1 or val_token_accuracy for tagging)",
    "logdir": "directory that holds run directories",
    "run_name": "run directory name (default: the data name)",
    "probe_sentences": "validation sentences drawn as attention maps each epoch",
}
CHOICES = {
    "task": TASKS, "optimizer": OPTIMIZERS, "tag_scheme": TAG_SCHEMES, "monitor": MONITORS, "position": ("auto", *POSITION_KINDS), "pooling": POOLING_MODES,
}


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Defaults: " + ", ".join(
            f"--{f.name.replace('_', '-')} {f.default}" for f in dataclasses.fields(TrainConfig)
            if f.default != ""
        ),
        argument_default=argparse.SUPPRESS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="FILE.json", help="start from this config; flags override it")
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        help_text = f"{HELP[field.name]} (default: {field.default!r})"
        if isinstance(field.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            parser.add_argument(
                flag, type=type(field.default), choices=CHOICES.get(field.name),
                help=help_text, metavar=None if field.name in CHOICES else field.name.upper(),
            )
    return vars(parser.parse_args(argv))


def main(argv=None):
    flags = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config_file = flags.pop("config", None)
        values = TrainConfig.from_json_file(config_file).to_dict() if config_file else {}
        values.update(flags)
        config = TrainConfig.from_dict(values)
        from keras_encoder.training import run  # TensorFlow loads here, after flags

        run(config)
    except KerasEncoderError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\nInterrupted. Run the same command again to resume from the last finished epoch.",
            file=sys.stderr,
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
