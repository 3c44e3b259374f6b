"""Length buckets in the torch path: each batch padded to its own longest text."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from aiflywheel.tasks.text_classification.models.encoding import batched_forward, length_buckets

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import build_tiny_bert, sentiment_rows  # noqa: E402


def test_length_buckets_group_similar_lengths_and_cover_every_index() -> None:
    lengths = [3, 40, 4, 41, 5, 120, 3, 39]
    batches = list(length_buckets(lengths, 3))
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(len(b) <= 3 for b in batches)
    # short texts never share a batch with the 120-token one
    assert [sorted(lengths[i] for i in b) for b in batches] == [
        [3, 3, 4],
        [5],
        [39, 40, 41],
        [120],
    ]


def test_torch_forward_pads_each_bucket_to_its_own_longest(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(1)
    rows = sentiment_rows(40)
    folder = build_tiny_bert(tmp_path / "bert", [text for text, _ in rows])
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    short = [text for text, _ in rows[:6]]
    texts = [short[0], " ".join(short * 3), *short[1:], " ".join(short * 2)]
    widths: list[tuple[int, int]] = []

    def forward(inputs):
        widths.append(tuple(inputs["input_ids"].shape))
        return model(**inputs).last_hidden_state[:, 0]

    rows_out = batched_forward(tokenizer, forward, texts, prefix="", max_length=100, batch_size=16)
    lengths = [len(tokenizer(t, truncation=True, max_length=100)["input_ids"]) for t in texts]
    # two buckets: the six short texts padded to their own longest, not to the long ones'
    short_width = max(lengths[i] for i in (0, 2, 3, 4, 5, 6))
    assert sorted(widths) == [(2, max(lengths[1], lengths[7])), (6, short_width)]
    assert short_width * 4 < min(lengths[1], lengths[7])
    # the same rows, in input order, as running each text alone
    with torch.inference_mode():
        alone = np.stack(
            [
                forward(tokenizer([t], truncation=True, max_length=100, return_tensors="pt"))[0]
                .float()
                .numpy()
                for t in texts
            ]
        )
    assert np.abs(rows_out - alone).max() < 1e-4
    assert batched_forward(tokenizer, forward, [], prefix="", max_length=8, batch_size=4).size == 0
