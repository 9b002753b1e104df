"""Bad input: one sentence on stderr, exit code 2, nothing left behind."""

import importlib.util
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_cli():
    spec = importlib.util.spec_from_file_location("train_cli", os.path.join(REPO, "train.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cli():
    return load_cli()


def run_main(cli, capsys, tmp_path, *flags):
    code = cli.main(["--logdir", str(tmp_path / "logs"), *flags])
    captured = capsys.readouterr()
    return code, captured.err


ENOUGH = "text,label\n" + "".join(f"t{i},{'xy'[i % 2]}\n" for i in range(40))

CASES = {
    "missing file": (None, [], "missing.csv"),
    "missing column": ("words,label\nhello,a\nbye,b\n", [], "no column 'text'.*words, label"),
    "empty file": ("", [], "empty"),
    "one class": ("text,label\nhello,a\nbye,a\nyes,a\n", [], "only one"),
    "undecodable bytes": (b"text,label\nhello,a\n\xff\xfe bad,b\n", [], "line 3"),
    "unknown position": ("text,label\na,b\n", ["--position", "absolute"], "--position"),
    "unknown preset": ("text,label\na,b\n", ["--preset", "fast"], "--preset"),
    "task auto is gone": ("text,label\na,b\n", ["--task", "auto"], "--task"),
    "removed flag --optimizer": ("text,label\na,b\n", ["--optimizer", "sparse_adamw"], "unrecognized"),
    "removed flag --ngram-features": ("text,label\na,b\n", ["--ngram-features", "1024"], "unrecognized"),
    "removed flag --pretrain-epochs": ("text,label\na,b\n", ["--pretrain-epochs", "1"], "unrecognized"),
    # Flag values are checked before the data is read, so a bad flag is named
    # even when the data has problems of its own.
    "bad epochs": ("text,label\na,b\n", ["--epochs", "-1"], "--epochs must be a positive integer. Received: -1"),
    "bad token dropout": ("text,label\na,b\n", ["--token-dropout", "1.5"], "--token-dropout must be in \\[0, 1\\)"),
    "bad bigram buckets": ("text,label\na,b\n", ["--bigram-buckets", "-2"], "--bigram-buckets"),
    "ema of -1 is no longer auto": ("text,label\na,b\n", ["--ema", "-1"], r"--ema must be in \[0, 1\). Received: -1.0"),
    "heads do not divide hidden": (
        "text,label\na,b\n", ["--heads", "3"], "--heads must divide --hidden. Received: hidden=128, heads=3"
    ),
    "window table when classifying": (ENOUGH, ["--window-features", "1024"], "--window-features applies to tagging only"),
    "pretraining with LoRA": (ENOUGH, ["--task", "pretrain", "--lora-rank", "4"], "--lora-rank does not apply to pretraining"),
    "pretraining on labelled data": (
        ENOUGH, ["--task", "pretrain"],
        r"--task pretrain reads --data \S+data\.csv as unlabelled data, which it is not \(.*one text per line",
    ),
    "mask rate when classifying": (ENOUGH, ["--mask-rate", "0.3"], "--mask-rate applies to pretraining only"),
    "mask spans when classifying": (ENOUGH, ["--mask-spans", "3"], "--mask-spans applies to pretraining only"),
    "mask spans past 4": (
        ENOUGH, ["--task", "pretrain", "--mask-spans", "5"], "--mask-spans must be an integer from 1 to 4. Received: 5"
    ),
    "pretraining with a teacher": (ENOUGH, ["--task", "pretrain", "--teacher", "logs/x"],
                                   "--teacher does not apply to pretraining"),
    "unlabelled text to classify": (ENOUGH, ["--data", "chinese-text", "--task", "classify"],
                                    "--data chinese-text is unlabelled text; use it with --task pretrain"),
    "monitor the task lacks": (
        ENOUGH, ["--monitor", "val_entity_f1"],
        "--monitor val_entity_f1 is not computed for classification; choose one of val_loss",
    ),
    "tagging preset on classification data": (
        ENOUGH, ["--preset", "tag-bio"],
        r"--preset tag-bio reads --data \S+data\.csv as tagging data, which it is not \(.*line 1: "
        r"expected 'token<TAB>tag'.*\)\. Leave --preset out to let the data pick the task\.",
    ),
    "preset and task disagree": (
        ENOUGH, ["--preset", "classify", "--task", "tag"],
        "--preset classify is for --task classify, not --task tag",
    ),
}
# Rejected by argparse before our code runs (its own usage message).
ARGPARSE = ("unknown position", "unknown preset", "task auto is gone") + tuple(
    name for name in CASES if name.startswith("removed flag")
)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_clear_message(cli, capsys, tmp_path, name):
    content, flags, match = CASES[name]
    path = tmp_path / "data.csv"
    if content is not None:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    else:
        path = tmp_path / "missing.csv"
    if name in ARGPARSE:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["--data", str(path), *flags])
        assert exit_info.value.code == 2
        assert re.search(match, capsys.readouterr().err)
        return
    code, err = run_main(cli, capsys, tmp_path, "--data", str(path), *flags)
    assert code == 2
    assert err.startswith("error: ")
    assert len(err.strip().splitlines()) == 1, err
    assert re.search(match, err), err
    assert not (tmp_path / "logs").exists() or not any((tmp_path / "logs").iterdir())


def test_config_file_and_flags(cli, capsys, tmp_path):
    config = tmp_path / "run.json"
    config.write_text('{"hidden": 64, "heads": 5}')
    code, err = run_main(cli, capsys, tmp_path, "--config", str(config))
    assert code == 2 and "--heads must divide --hidden. Received: hidden=64, heads=5" in err
    # A flag overrides the file.
    code, err = run_main(cli, capsys, tmp_path, "--config", str(config), "--heads", "3")
    assert code == 2 and "hidden=64, heads=3" in err
    config.write_text('{"preset": "fast"}')
    code, err = run_main(cli, capsys, tmp_path, "--config", str(config))
    assert code == 2 and "--preset must be one of classify, tag-bio, tag-plain, pretrain. Received: 'fast'" in err
    config.write_text('{"hidden_size": 64}')
    code, err = run_main(cli, capsys, tmp_path, "--config", str(config))
    assert code == 2 and "hidden_size" in err and str(config) in err
    code, err = run_main(cli, capsys, tmp_path, "--config", str(tmp_path / "nope.json"))
    assert code == 2 and "nope.json" in err


@pytest.mark.slow
def test_cli_prints_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "train.py"), "--data", str(tmp_path / "absent.csv")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "absent.csv" in result.stderr
