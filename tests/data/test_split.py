from __future__ import annotations

from collections import Counter

import pytest

from aiflywheel.data.dataset import Dataset, Record
from aiflywheel.data.split import SPLITS, split_dataset
from aiflywheel.errors import SplitError
from aiflywheel.recipe import SplitConfig


def _dataset(n_per_label: dict[str, int], users: int | None = None) -> Dataset:
    records = []
    for label, n in n_per_label.items():
        for i in range(n):
            meta = {"user": f"u{i % users}"} if users else {}
            records.append(
                Record(
                    id=f"{label}-{i}", text=f"{label} example number {i}", label=label, meta=meta
                )
            )
    return Dataset(records)


def test_stratified_split_keeps_label_proportions_and_is_seeded() -> None:
    dataset = _dataset({"a": 300, "b": 100})
    result = split_dataset(dataset, SplitConfig(), seed=1)
    sizes = {name: len(result.parts[name]) for name in SPLITS}
    assert sizes == {"train": 320, "val": 40, "test": 40}
    for name in SPLITS:
        counts = Counter(r.label for r in result.parts[name])
        assert counts["a"] == 3 * counts["b"]
    again = split_dataset(dataset, SplitConfig(), seed=1)
    assert again.version == result.version
    other = split_dataset(dataset, SplitConfig(), seed=2)
    assert other.version != result.version
    ids = [r.id for name in SPLITS for r in result.parts[name]]
    assert sorted(ids) == sorted(r.id for r in dataset)


def test_group_aware_split_never_shares_a_group() -> None:
    dataset = _dataset({"a": 200, "b": 200}, users=40)
    result = split_dataset(dataset, SplitConfig(group_by="user"), seed=0)
    users = {name: {r.meta["user"] for r in result.parts[name]} for name in SPLITS}
    assert not (users["train"] & users["test"]) and not (users["train"] & users["val"])
    assert not (users["val"] & users["test"])
    assert result.leakage["groups_shared"] == 0
    assert result.groups == {name: len(users[name]) for name in SPLITS}
    assert 0.7 < len(result.parts["train"]) / len(dataset) < 0.9


def test_near_duplicate_texts_land_in_one_split() -> None:
    records = [
        Record(id=f"d{i}", text="Same complaint!" if i % 2 else "same complaint", label="a")
        for i in range(20)
    ]
    records += [
        Record(id=f"x{i}", text=f"unique text {i}", label="a" if i % 2 else "b") for i in range(80)
    ]
    result = split_dataset(Dataset(records), SplitConfig(), seed=3)
    homes = {name for name in SPLITS for r in result.parts[name] if r.id.startswith("d")}
    assert len(homes) == 1
    assert result.leakage == {
        "test_in_train": 0,
        "val_in_train": 0,
        "test_in_val": 0,
        "groups_shared": 0,
    }


def test_k_folds_partition_train_and_val() -> None:
    dataset = _dataset({"a": 60, "b": 40})
    result = split_dataset(dataset, SplitConfig(k_folds=5), seed=0)
    pool = {r.id for name in ("train", "val") for r in result.parts[name]}
    folds = result.folds
    assert len(folds) == 5
    assert sorted(i for fold in folds for i in fold) == sorted(pool)
    labels = {r.id: r.label for r in dataset}
    for fold in folds:
        share_a = sum(labels[i] == "a" for i in fold) / len(fold)
        assert 0.45 < share_a < 0.75


def test_too_few_rows_or_groups_is_a_clear_error() -> None:
    with pytest.raises(SplitError, match=r"cannot split 2 distinct texts into 3 non-empty parts"):
        split_dataset(_dataset({"a": 1, "b": 1}), SplitConfig(), seed=0)
    with pytest.raises(SplitError, match=r"cannot split 2 groups of 'user'"):
        split_dataset(_dataset({"a": 10, "b": 10}, users=2), SplitConfig(group_by="user"), seed=0)


def test_val_can_be_zero() -> None:
    result = split_dataset(
        _dataset({"a": 5, "b": 5}), SplitConfig(train=0.8, val=0, test=0.2), seed=0
    )
    assert len(result.parts["val"]) == 0 and len(result.parts["test"]) == 2


def test_following_the_too_few_rows_advice_succeeds() -> None:
    """The error says how many distinct texts to add; adding them splits (even when each
    text has its own label, so the stratified assignment alone would leave parts empty)."""
    small = _dataset({"a": 1, "b": 1})
    with pytest.raises(SplitError) as caught:
        split_dataset(small, SplitConfig(), seed=0)
    message = str(caught.value)
    assert "\n" not in message and "split.val: 0" not in message
    assert "add at least 1 more distinct text" in message
    grown = Dataset([*small, Record(id="c-0", text="a third different text", label="c")])
    for seed in range(5):
        result = split_dataset(grown, SplitConfig(), seed=seed)
        assert all(len(result.parts[name]) == 1 for name in SPLITS)
    with pytest.raises(SplitError, match="add at least 2 more distinct groups"):
        split_dataset(_dataset({"a": 4}, users=1), SplitConfig(group_by="user"), seed=0)
