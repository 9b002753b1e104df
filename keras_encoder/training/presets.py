"""Training presets: named blocks of literal defaults, one reason each.

The data picks the preset: classification data gets `classify`; tagging
data gets `tag-bio` when its tags are BIO entity spans, `tag-plain`
otherwise (`--preset` chooses one by name). Flags and `--config` values
override single fields. What differs between the tagging presets is what
the tag scheme decides (the score that picks the checkpoint, and the size
of the window table, which grows with the number of tags), so they key on
the scheme rather than on characters or words.

Reasons quote the validation scores each value was chosen on, on the
built-in corpora (RESULTS.md has the runs); "test" marks a choice made on
test scores before defaults were picked on validation scores only, which
RESULTS.md lists.
This module imports nothing heavy, so `train.py --help` can list it.
"""

# Values shared by every preset.
COMMON = {
    "seed": 1234,  # one seed for the split, initialization, dropout and shuffling
    "validation_fraction": 0.1,  # picks the checkpoint and stops early
    "test_fraction": 0.1,  # scored once, after training
    "vocabulary_size": 8000,  # WordPiece learned on the train split; Chinese needs ~5k characters
    "max_length": 128,  # covers 99% of reviews in tokens; longer text is cut
    "layers": 2,  # two blocks: trains in minutes on 2 CPU cores, deeper did not pay on sentences
    "hidden": 128,  # width of every token vector
    "heads": 4,  # head size 32
    "intermediate": 512,  # 4 x hidden, as in the original Transformer
    "dropout": 0.1,  # BERT's rate; 0.3 with more weight decay did not do better
    "pooling": "mean",  # mean of real tokens as the sentence vector
    "norm_first": False,  # post-norm, as in BERT; two blocks need no pre-norm stability
    "embedding_norm": False,  # LayerNorm on embeddings did not help (validation 0.827 vs 0.829)
    "bigram_buckets": 32768,  # token-pair embeddings: NER validation F1 0.921 vs 0.918 at 262,144 rows
    "activation": "gelu",  # BERT's feed-forward activation
    "token_dropout": 0.1,  # word dropout: ahead in every (test) pair measured, within noise
    "batch_size": 64,  # examples per step; fits 2 cores' caches
    "learning_rate": 1e-3,  # peak AdamW rate after warm-up, for a small model trained from scratch
    "warmup_fraction": 0.1,  # linear warm-up over the first tenth of the steps
    "weight_decay": 0.01,  # AdamW decay, not applied to biases and norms
    "epochs": 10,  # a ceiling: early stopping ends most runs sooner
    "patience": 3,  # epochs without a better validation score before stopping
    "probe_sentences": 3,  # validation sentences drawn as attention maps each epoch
    "lora_rank": 0,  # 0: every weight trains; R: LoRA adapters of rank R and the head only
    "lora_alpha": 0.0,  # LoRA scale alpha / rank; 0 means alpha = rank (scale 1), as in Keras
    "lora_targets": "query,value",  # the projections LoRA adapts, as in the LoRA paper
    "adalora_rank": 0,  # 0: no AdaLoRA; R: AdaLoRA adapters of initial rank R (on lora_targets) and the head only
    "adalora_target_rank": 0,  # AdaLoRA's average final rank; 0 (unset) becomes half of adalora_rank
    "prefix_length": 0,  # 0: no prefix; P: prefix tuning, P learned key/value vectors per head and block
    "mask_rate": 0.15,  # pretraining: BERT's share of masked tokens
    "mask_spans": 1,  # pretraining: single tokens; spans of 1-4 fine-tuned reviews to validation 0.8474 vs 0.8589
    "held_out_seeds": "",  # pretraining on chinese-text: leave out the held-out text of --seed's split only
    "logdir": "logs",  # run directories go here
    # Off: XLA on batches padded to the 6 bucket lengths measured 0.82x in
    # train.py and 1.61x in the speed bench on the same AVX2 host within the
    # hour, and 0.82x on an AVX-512 one (RESULTS.md, Speed).
    "jit_compile": False,
}

PRESETS = {
    "classify": {
        **COMMON,
        "task": "classify",
        "position": "sinusoidal",  # no weights, any length; learned and rotary did no better (test only)
        "crf": False,  # no tag sequence to chain
        "window_features": 0,  # window tables are for tagging
        "window_scale": 1.0,  # no window table
        "ema": 0.0,  # weight average: 0.8439 at 0.995 vs 0.8410, within noise
        "monitor": "val_loss",  # lowest validation loss; accuracy follows it on reviews
    },
    "tag-bio": {
        **COMMON,
        "task": "tag",
        "position": "rotary",  # relative positions: NER validation F1 0.874 vs 0.685 sinusoidal at epoch 3
        "crf": True,  # transition scores and Viterbi: NER validation F1 0.929 vs 0.921
        "window_features": 1048576,  # hashed window scores: NER validation F1 0.9463 vs 0.9445 at 262,144
        "window_scale": 10.0,  # table learns 10x faster: validation F1 0.9445 vs 0.9365 at 1x (30x: level)
        "ema": 0.998,  # averaged weights: validation F1 rises steadily instead of swinging (best level)
        "monitor": "val_entity_f1",  # tagging loss turns up epochs before entity F1 stops rising
    },
    "tag-plain": {
        **COMMON,
        "task": "tag",
        "position": "rotary",  # as tag-bio
        "crf": True,  # as tag-bio
        "window_features": 262144,  # 44 POS tags: rows x tags kept under 2**24 weights
        "window_scale": 10.0,  # as tag-bio
        "ema": 0.998,  # as tag-bio
        "monitor": "val_token_accuracy",  # the task's score, as for tag-bio
    },
    "pretrain": {
        **COMMON,
        "task": "pretrain",
        # One backbone for every Chinese task: rotary, as the taggers from
        # scratch (NER F1 0.874 vs 0.685 sinusoidal); classification was level.
        "position": "rotary",
        "validation_fraction": 0.02,  # ~1,000 held-out texts score the masked-token accuracy
        "test_fraction": 0.02,
        "token_dropout": 0.0,  # masking is the noise here
        "crf": False,  # no tags
        "window_features": 0,
        "window_scale": 1.0,
        "ema": 0.0,
        "epochs": 12,  # about an hour of this 2-core CPU on chinese-text (RESULTS.md, Pretraining)
        "patience": 0,  # the held-out loss falls to the end: the schedule, not the monitor, ends it
        "monitor": "val_loss",  # masked-token cross-entropy on fixed held-out masks
    },
}


# A pretrained start overrides these values of the task's preset: the
# architecture comes from the checkpoint, and fine-tuning takes a small
# learning rate for a few epochs.
PRETRAINED = {
    "learning_rate": 5e-5,  # BERT's fine-tuning range is 2e-5 to 5e-5; other rates not yet measured here
    "epochs": 2,  # MiniLM on wordnet-supersenses: validation accuracy 0.8422 vs 0.8184 for 1 (3+ not measured)
    "token_dropout": 0.0,  # the checkpoint never saw [UNK] noise in pretraining
    "bigram_buckets": 0,  # not part of a BERT checkpoint
    "ema": 0.0,  # a few hundred steps: nothing to average over
}


def pretrained_start(init_task):
    """The values a start from `--init` overrides: `PRETRAINED`, except for
    one of our own pretraining runs (`init_task == "pretrain"`), which keeps
    the task preset's schedule: reviews validation accuracy 0.8416 at the
    preset's 1e-3 (best of 5 epochs) against 0.7523 at PRETRAINED's 5e-5 for
    2 epochs, from the same chinese-text run (RESULTS.md, Pretraining)."""
    return {} if init_task == "pretrain" else PRETRAINED


# LoRA (`--lora-rank`) and AdaLoRA (`--adalora-rank`) override these
# values: only the adapters and the head train, which takes a larger step.
LORA = {
    "learning_rate": 5e-4,  # the LoRA paper's rate for RoBERTa (4e-4 to 5e-4); not yet chosen on validation here
    "ema": 0.0,  # adapter files hold the raw weights; a weight average would not match them
}
# From one of our own pretraining runs (`--init` of a `pretrain` run), whose
# full fine-tune takes 1e-3 rather than BERT's 5e-5, LoRA takes 2e-3:
# reviews validation accuracy 0.8145 against 0.7730 at 5e-4 (query and
# value, rank 8), 0.8445 against 0.8191 (all six projections; RESULTS.md,
# LoRA on our own checkpoint).
OWN_CHECKPOINT_LORA = {"learning_rate": 2e-3}
ADALORA_SCALE = 8.0  # AdaLoRA's default alpha / rank (see adapter_defaults)


# Prefix tuning (`--prefix-length`) overrides these values: only the
# prefixes and the head train, from a small random start.
PREFIX = {
    "learning_rate": 5e-3,  # P-tuning v2's range for encoders (5e-3 to 1e-2); not yet chosen on validation here
    "ema": 0.0,  # as with LoRA: nothing to average over a few hundred steps
}


def adapter_defaults(values, init_task=None):
    """The defaults `--lora-rank`, `--adalora-rank` or `--prefix-length` in `values` override.

    `init_task` is the task of the `--init` run (`"pretrain"` for one of our
    own pretraining runs, whose LoRA takes `OWN_CHECKPOINT_LORA`'s larger
    learning rate), or `None`. With `--adalora-rank R` the target rank
    defaults to `R // 2` (at least 1), a middle choice not yet tuned on
    validation here, and `--lora-alpha` to `ADALORA_SCALE` times the rank.
    """
    lora = {**LORA, **(OWN_CHECKPOINT_LORA if init_task == "pretrain" else {})}
    if values.get("lora_rank"):
        return lora
    rank = values.get("adalora_rank")
    if rank:
        valid = isinstance(rank, int) and not isinstance(rank, bool)
        target = max(1, rank // 2) if valid else 0
        # Scale alpha / rank = 8: one scalar per triplet moves about the
        # learning rate per step, where LoRA moves every entry of B. Reviews
        # validation accuracy 0.8399 against 0.7748 at scale 1 (rank 12 to 8,
        # all six projections, 2e-3; RESULTS.md, Every variant on reviews).
        return {**lora, "adalora_target_rank": target, "lora_alpha": ADALORA_SCALE * rank if valid else 0.0}
    if values.get("prefix_length"):
        return PREFIX
    return {}


def preset_for(task, scheme=None):
    """The preset name the data picks: `classify`, `pretrain`, `tag-bio` or `tag-plain`."""
    if task in ("classify", "pretrain"):
        return task
    return "tag-bio" if scheme == "bio" else "tag-plain"


def fitted_to_data(values, num_train_examples, num_train_units=None, num_tags=None):
    """Preset `values` adapted to a small training set (a copy).

    Two rules keep toy runs sensible; on the built-in corpora neither
    changes anything:

    - the window table has at most the power of two at or above 14 rows per
      training unit (two per window feature), and at least 4096, so a few
      hundred sentences do not carry a million-row table; and rows x tags
      stays at most 2**24;
    - the weight-average momentum is at most `1 - batch_size / examples`,
      so that the average spans about an epoch and a few steps are not
      averaged with the initial weights.
    """
    values = dict(values)
    rows = values.get("window_features", 0)
    if rows:
        while num_tags and rows > 4096 and rows * num_tags > 2**24:
            rows //= 2
        if num_train_units is not None:
            enough = 4096
            while enough < 14 * num_train_units:
                enough *= 2
            rows = min(rows, enough)
        values["window_features"] = rows
    ema = values.get("ema", 0.0)
    if ema and num_train_examples:
        steps = max(num_train_examples / values["batch_size"], 2.0)
        values["ema"] = round(min(ema, 1.0 - 1.0 / steps), 6)
    return values
