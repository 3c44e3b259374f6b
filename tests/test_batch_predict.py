"""Batch prediction over files: CSV / JSONL / Parquet round trips, resuming after an
interruption (Ctrl-C in process, SIGKILL of the command), one-line errors, any task."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from aiflywheel.batch import predict as batch
from aiflywheel.batch.predict import manifest_of, predict_file, work_dir_of
from aiflywheel.cli import main
from aiflywheel.core import registry
from aiflywheel.core.task import BatchAnswer, PredictionPayload
from aiflywheel.errors import ConflictError, DataError, IngestError, Interrupted, ModelError
from aiflywheel.store import open_store

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import sentiment_rows  # noqa: E402

PHONE = "13812345678"


@pytest.fixture(scope="module")
def trained_home(tmp_path_factory) -> Path:
    """A FLYWHEEL_HOME with tiny-sentiment registered (a TF-IDF classifier whose recipe
    redacts PII), shared by the tests: batch prediction writes nothing to the store."""
    from aiflywheel.store import Store
    from test_serve import register_tfidf

    home = tmp_path_factory.mktemp("batch-home")
    register_tfidf(Store(f"sqlite:///{home / 'flywheel.db'}"), home / "models")
    return home


@pytest.fixture
def home(trained_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FLYWHEEL_HOME", str(trained_home))
    return trained_home


def _texts(n: int) -> list[str]:
    texts = [text for text, _ in sentiment_rows(n, seed=3)]
    # Every 7th row carries a phone number: the output must hold it redacted.
    return [f"{t} 电话 {PHONE}" if i % 7 == 0 else t for i, t in enumerate(texts)]


def _write_input(path: Path, texts: list[str]) -> Path:
    rows = [{"id": i, "text": t} for i, t in enumerate(texts)]
    if path.suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, ["id", "text"])
            writer.writeheader()
            writer.writerows(rows)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=16)
    return path


def _read_output(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    elif path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    else:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    for row in rows:  # CSV and Parquet hold the payload as JSON text, CSV every value as text
        row["output"] = json.loads(row["output"]) if row["output"] else None
        row["row"], row["version"] = int(row["row"]), int(row["version"])
        row["error"] = row["error"] or None
        row["label"] = row["label"] or None
    return rows


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_round_trip_predicts_every_row_redacted_with_its_version(
    home: Path, tmp_path: Path, suffix: str
) -> None:
    from aiflywheel.core.versions import load

    texts = _texts(45)
    source = _write_input(tmp_path / f"in{suffix}", texts)
    output = tmp_path / f"out{suffix}"
    result = predict_file("tiny-sentiment", source, output, chunk_rows=8, progress=False)

    model = load("tiny-sentiment")
    rows = _read_output(output)
    assert [r["row"] for r in rows] == list(range(45)) and result.rows == 45
    assert {r["version"] for r in rows} == {model.version} == {result.version}
    expected = model.predict([t.replace(PHONE, "<PHONE>") for t in texts])
    assert [r["label"] for r in rows] == [p.label for p in expected]
    assert [r["output"]["probabilities"] for r in rows] == [p.probabilities for p in expected]
    assert PHONE not in output.read_bytes().decode("utf-8", "replace")
    assert rows[0]["text"].endswith("电话 <PHONE>") and rows[1]["text"] == texts[1]
    assert all(r["error"] is None for r in rows)

    manifest = json.loads(manifest_of(output).read_text(encoding="utf-8"))
    assert manifest["feature"] == "tiny-sentiment" and manifest["version"] == model.version
    assert manifest["rows"] == 45 and manifest["errors"] == 0
    assert manifest["input"]["column"] == "text" and "PII" in manifest["redaction"]
    assert not work_dir_of(output).exists()


def test_bad_rows_get_an_error_and_keep_their_place(home: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    lines = [{"text": "很好 great"}, {"text": "  "}, {"other": 1}, {"text": 42}, {"text": ["x"]}]
    source.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    output = tmp_path / "out.jsonl"
    result = predict_file("tiny-sentiment", source, output, column="text", progress=False)
    rows = _read_output(output)
    assert [r["error"] for r in rows] == [
        None,
        "empty 'text'",
        "no 'text' value",
        None,
        "'text' is a list, not text",
    ]
    assert rows[0]["label"] in ("positive", "negative") and rows[3]["text"] == "42"
    assert result.errors == 3 and result.rows == 5


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_an_interrupted_run_resumes_to_exactly_the_uninterrupted_output(
    home: Path, tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _write_input(tmp_path / f"in{suffix}", _texts(50))
    straight = tmp_path / f"straight{suffix}"
    predict_file("tiny-sentiment", source, straight, chunk_rows=6, progress=False)

    resumed = tmp_path / f"resumed{suffix}"
    real = batch._answer
    calls = []

    def ctrl_c_on_the_fourth_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(batch, "_answer", ctrl_c_on_the_fourth_chunk)
    with pytest.raises(Interrupted, match="interrupted after 18 of 50 rows; run the same"):
        predict_file("tiny-sentiment", source, resumed, chunk_rows=6, progress=False)
    assert not resumed.exists() and len(list(work_dir_of(resumed).glob("parts/part-*"))) == 3
    monkeypatch.setattr(batch, "_answer", real)

    lines: list[str] = []
    result = predict_file(
        "tiny-sentiment", source, resumed, chunk_rows=6, progress=False, report=lines.append
    )
    assert result.resumed_at == 18 and lines == [
        f"resuming after 18 of 50 rows (v{result.version}, as started)"
    ]
    assert resumed.read_bytes() == straight.read_bytes()


def test_a_killed_command_resumes_without_duplicates_or_gaps(home: Path, tmp_path: Path) -> None:
    source = _write_input(tmp_path / "in.csv", _texts(1200))
    straight = tmp_path / "straight.csv"
    predict_file("tiny-sentiment", source, straight, chunk_rows=4, progress=False)

    output = tmp_path / "out.csv"
    command = [
        sys.executable, "-m", "aiflywheel.cli", "predict", "tiny-sentiment",
        "--input", str(source), "--output", str(output), "--chunk-rows", "4",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    parts = work_dir_of(output) / "parts"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(parts.glob("part-*"))) < 3:
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert not output.exists() and list(parts.glob("part-*"))

    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert "resuming after" in second.stdout and "1,200 rows predicted" in second.stdout
    assert output.read_bytes() == straight.read_bytes()


def test_rerunning_a_finished_command_does_not_clobber_the_output(
    home: Path, tmp_path: Path, capsys
) -> None:
    source = _write_input(tmp_path / "in.csv", _texts(5))
    output = tmp_path / "out.csv"
    args = ["predict", "tiny-sentiment", "--input", str(source), "--output", str(output)]
    assert main(args) == 0
    before = output.read_bytes()
    assert main(args) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0 and output.read_bytes() == before


def test_a_changed_input_is_not_mixed_into_an_unfinished_run(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _write_input(tmp_path / "in.jsonl", _texts(20))
    output = tmp_path / "out.jsonl"
    monkeypatch.setattr(batch, "_answer", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(Interrupted):
        predict_file("tiny-sentiment", source, output, chunk_rows=5, progress=False)
    monkeypatch.undo()
    monkeypatch.setenv("FLYWHEEL_HOME", str(home))
    _write_input(source, _texts(21))
    with pytest.raises(ConflictError, match="input_size.* differ .*pass --restart"):
        predict_file("tiny-sentiment", source, output, chunk_rows=5, progress=False)
    result = predict_file(
        "tiny-sentiment", source, output, chunk_rows=5, progress=False, restart=True
    )
    assert result.rows == 21 and result.resumed_at == 0


def test_bad_input_is_one_line(home: Path, tmp_path: Path, capsys) -> None:
    good = _write_input(tmp_path / "in.csv", _texts(3))
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": \n')
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    (tmp_path / "latin1.csv").write_bytes("text\ncaf\xe9\n".encode("latin-1"))
    (tmp_path / "in.xlsx").write_bytes(b"PK\x03\x04")
    (tmp_path / "folder.csv").mkdir()
    cases = [
        (["--input", str(tmp_path / "nope.csv")], "cannot read", "no such file"),
        (["--input", str(tmp_path / "in.xlsx")], "unknown format ('.xlsx')", ".parquet"),
        (["--input", str(good), "--column", "body"], "has no column 'body'", "'id', 'text'"),
        (["--input", str(tmp_path / "bad.jsonl")], "line 2: not valid JSON", "one JSON object"),
        (["--input", str(tmp_path / "bad.parquet")], "not a readable Parquet file", ""),
        (["--input", str(tmp_path / "latin1.csv")], "line 2: bytes that are not UTF-8", ""),
        (["--input", str(tmp_path / "folder.csv")], "it is a folder", ""),
    ]
    for extra, first, second in cases:
        out = tmp_path / "out.csv"
        code = main(["predict", "tiny-sentiment", *extra, "--output", str(out)])
        err = capsys.readouterr().err
        flat = " ".join(err.split())
        assert code == 2 and first in flat and second in flat, (extra, err)
        assert "Traceback" not in err and not out.exists()
    assert main(["predict", "tiny-sentiment", "--input", str(good)]) == 2
    assert "needs both --input FILE and --output FILE" in capsys.readouterr().err
    code = main(["predict", "tiny-sentiment", "--input", str(good), "--output", str(good)])
    assert code == 2 and "is the input file" in capsys.readouterr().err
    code = main(["predict", "tiny-sentiment", "--input", str(good), "--output", "x.txt"])
    assert code == 2 and "unknown format ('.txt')" in " ".join(capsys.readouterr().err.split())
    # The texts form still works.
    assert main(["predict", "tiny-sentiment", "很好 great"]) == 0
    assert '"label"' in capsys.readouterr().out


# -- any task on the contract ------------------------------------------------------------


class Verdict(PredictionPayload):
    words: int


class WordCountTask:
    """A toy task: a text in, 'long' or 'short' out (its predictor counts words)."""

    name = "word_count"
    conversational = False
    batch_input = "sentence"
    prediction_payload = Verdict

    def load_predictor(self, model_path, *, feature, version, store=None):
        limit = int((Path(model_path) / "limit.txt").read_text())
        return types.SimpleNamespace(limit=limit)

    def predict_batch(self, predictor, inputs, *, recipe):
        return [
            BatchAnswer(
                text.upper(),
                {
                    "label": "long" if len(text.split()) > predictor.limit else "short",
                    "words": len(text.split()),
                },
            )  # fmt: skip
            for text in inputs
        ]


class ChatTask(WordCountTask):
    name = "chat"
    conversational = True
    batch_input = None


@pytest.fixture
def toy_tasks(monkeypatch: pytest.MonkeyPatch):
    module = types.ModuleType("toy_tasks_for_batch")
    module.TASK = WordCountTask()
    chat = types.ModuleType("toy_chat_for_batch")
    chat.TASK = ChatTask()
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(sys.modules, chat.__name__, chat)
    monkeypatch.setitem(registry.TASKS, "word_count", module.__name__)
    monkeypatch.setitem(registry.TASKS, "chat", chat.__name__)
    registry.get_task.cache_clear()
    yield
    registry.get_task.cache_clear()


def _register(feature: str, task: str, folder: Path) -> None:
    folder.mkdir()
    (folder / "limit.txt").write_text("3")
    store = open_store()
    store.upsert_feature(feature, task, "", {"task": task})
    store.register_model_version(
        feature,
        run_id=None,
        dataset_version_id=None,
        model_path=str(folder),
        base_model="rule",
        method="count",
        metrics={},
        recipe={"task": task},
    )


def test_any_non_conversational_task_predicts_files_through_its_contract(
    toy_tasks, tmp_path: Path
) -> None:
    _register("lengths", "word_count", tmp_path / "model")
    source = tmp_path / "in.csv"
    source.write_text("sentence\none two\none two three four\n", encoding="utf-8")
    output = tmp_path / "out.jsonl"
    predict_file("lengths", source, output, progress=False)
    rows = _read_output(output)
    assert [(r["sentence"], r["label"], r["output"]["words"]) for r in rows] == [
        ("ONE TWO", "short", 2),
        ("ONE TWO THREE FOUR", "long", 4),
    ]

    _register("helpdesk", "chat", tmp_path / "chat-model")
    with pytest.raises(ModelError, match="helpdesk is a chat feature: it answers in conversation"):
        predict_file("helpdesk", source, tmp_path / "chat.jsonl", progress=False)


def test_chunk_rows_must_be_positive(home: Path, tmp_path: Path) -> None:
    source = _write_input(tmp_path / "in.csv", _texts(2))
    with pytest.raises(DataError, match="--chunk-rows must be at least 1, got 0"):
        predict_file("tiny-sentiment", source, tmp_path / "o.csv", chunk_rows=0)
    with pytest.raises(IngestError, match="has no column 'body'"):
        predict_file("tiny-sentiment", source, tmp_path / "o.csv", column="body")


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_resuming_skips_exactly_the_rows_done(tmp_path: Path, fmt: str) -> None:
    """Chunks read after skipping k chunks are the chunks a full read gives from k on,
    for any chunk size, row-group size (Parquet) and short last chunk or group."""
    from aiflywheel.batch.tables import TableReader

    for n, group in [(50, 16), (48, 16), (7, 3), (1, 1)]:
        path = _write_input(tmp_path / f"t{n}.{fmt}", [f"t{i}" for i in range(n)])
        if fmt == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(pq.read_table(path), path, row_group_size=group)
        reader = TableReader(path, "text")
        assert reader.count() == n
        for size in (1, 4, 6, 16, 17):
            full = list(reader.chunks(size))
            assert [v for chunk in full for v in chunk] == [f"t{i}" for i in range(n)]
            for k in range(len(full) + 1):
                assert list(reader.chunks(size, skip=k * size)) == full[k:], (n, size, k)


def test_csv_output_is_safe_to_open_in_a_spreadsheet(home: Path, tmp_path: Path) -> None:
    """A text that a spreadsheet would run as a formula is written neutralized (a ``'`` in
    front), and an e-mail hidden by a zero-width character is caught by the one gate."""
    from aiflywheel.data.spreadsheet import restore_cell

    formula = '=HYPERLINK("http://evil.example","点我") 很好'
    texts = [formula, "@SUM(A1:A2) 差评", "邮箱 li\u200blei@example.com 很好"]
    source = _write_input(tmp_path / "in.csv", texts)
    output = tmp_path / "out.csv"
    predict_file("tiny-sentiment", source, output, chunk_rows=2, progress=False)

    with output.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["text"].startswith("'=") and restore_cell(rows[0]["text"]).startswith("=")
    assert rows[1]["text"].startswith("'@")
    assert "example.com" not in output.read_text(encoding="utf-8")
