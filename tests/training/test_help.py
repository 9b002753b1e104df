"""`python train.py --help` answers at once, without TensorFlow, with the values a run uses."""

import json
import os
import re
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(REPO, "train.py")

# Loads train.py as `python train.py` would, parses flags, then reports
# which heavy modules that loaded.
PARSE_ONLY = f"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("train_cli", {TRAIN!r})
cli = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cli)
flags = cli.parse_args(["--data", "my.conll", "--preset", "tag-plain", "--epochs", "3", "--no-crf"])
try:
    cli.parse_args(["--help"])
except SystemExit as exit:
    code = exit.code
heavy = sorted(name for name in ("tensorflow", "keras", "keras_hub", "numpy") if name in sys.modules)
print(json.dumps({{"flags": flags, "help_exit": code, "heavy": heavy}}))
"""


def test_parsing_flags_and_help_load_no_tensorflow():
    result = subprocess.run(
        [sys.executable, "-c", PARSE_ONLY], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["heavy"] == []
    assert report["help_exit"] == 0
    # Only what was given: the rest comes from the preset once the data is read.
    assert report["flags"] == {"data": "my.conll", "preset": "tag-plain", "epochs": 3, "crf": False}


def test_help_is_fast_and_shows_the_values_a_run_uses():
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, TRAIN, "--help"], cwd=REPO, capture_output=True, text=True, timeout=60,
        env=dict(os.environ, COLUMNS="1000"),  # no wrapping inside a help text
    )
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stderr[-2000:]
    # Under a second on an idle machine; the bound leaves room for a busy one.
    assert seconds < 5, seconds
    text = " ".join(result.stdout.split())
    assert not re.search(r"(?<![\w-])-1(?![\w.])", text), "a -1 sentinel in --help"
    assert not re.search(r"\bauto\b", text), "an 'auto' sentinel in --help"
    for shown in (
        "--seed SEED seed for the split, initialization, dropout and shuffling (default: 1234)",
        "(default: 32768)",
        "(default: sinusoidal (classify), rotary (tag-bio), rotary (tag-plain), rotary (pretrain))",
        "(default: 0 (classify), 1048576 (tag-bio), 262144 (tag-plain), 0 (pretrain))",
        "(default: 0.0 (classify), 0.998 (tag-bio), 0.998 (tag-plain), 0.0 (pretrain))",
        "--preset {classify,tag-bio,tag-plain,pretrain}",
        "--task {classify,tag,pretrain}",
        "--mask-rate MASK_RATE pretraining: share of tokens masked (80% [MASK], 10% random, 10% kept) "
        "and predicted (default: 0.15)",
        "--mask-spans MASK_SPANS pretraining: longest span of consecutive tokens masked together (1: single "
        "tokens; 2 to 4: MacBERT's n-gram masking",
        "kept as a whole) (default: 1)",
    ):
        assert shown in text, shown
    for gone in ("--ngram-features", "--optimizer", "--pretrain-epochs"):
        assert gone not in text
