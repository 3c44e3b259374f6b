"""Batch prediction over a file: ``flywheel predict FEATURE --input FILE --output FILE``.

The input (CSV / TSV, JSON Lines or Parquet, any size) is read one chunk of rows at a
time; each chunk goes through the feature's task (``Task.predict_batch`` on the predictor
``Task.load_predictor`` gave), so any task that answers one input with one prediction
works, not only classifiers. Every output row holds::

    row        the input row's position (0 = the first row after the header)
    <column>   the input as the prediction log would store it (cleaned, through the
               store's redaction gate; CSV cells neutralized for spreadsheets)
    version    the model version that answered
    label      the prediction in one word (empty when the row has an error)
    output     the whole prediction payload (a JSON object; JSON text in CSV / Parquet)
    error      why the row got no prediction (blank input, ...), else empty

**Resumable, never duplicated.** Work happens in ``.<output name>.partial/`` next to the
output: a ``state.json`` (what is being predicted: feature, the version pinned at the
start, the input's size and modification time, column, chunk size) and one part file per
chunk, each written to a temporary name, flushed and renamed, so a part is complete or
absent. Interrupted (Ctrl-C, exit 130; ``kill``; a crash), the same command counts the
complete parts, skips that many input rows and goes on. At the end the parts are joined
into a temporary file that is renamed onto the output (the output is complete or
absent), a sidecar ``<output>.manifest.json`` records the version, counts and input, and
the work folder is removed. Joining costs one extra copy of the output on disk, which is
what buys resuming at any point with the output itself always whole.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aiflywheel.batch.tables import PART_SUFFIX, TableReader, concatenate, table_format, write_part
from aiflywheel.errors import ConflictError, DataError, Interrupted, ModelError
from aiflywheel.files import write_json_atomic
from aiflywheel.store.redaction import redact_text

DEFAULT_CHUNK_ROWS = 1000
STATE_FILE = "state.json"
MANIFEST_SUFFIX = ".manifest.json"


@dataclass
class BatchResult:
    """A finished batch prediction."""

    output: Path
    manifest: Path
    feature: str
    version: int
    rows: int
    errors: int
    resumed_at: int  # rows already done when this call started (0: a fresh run)
    seconds: float


def work_dir_of(output: Path) -> Path:
    return output.parent / f".{output.name}.partial"


def manifest_of(output: Path) -> Path:
    return output.parent / (output.name + MANIFEST_SUFFIX)


def predict_file(
    ref: str,
    source: Path,
    output: Path,
    *,
    column: str | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    restart: bool = False,
    force: bool = False,
    store=None,
    progress: bool = True,
    report: Callable[[str], None] = lambda _: None,
) -> BatchResult:
    """Predict every row of ``source`` into ``output`` (see the module docstring).

    ``ref`` is ``FEATURE`` (its champion, else newest candidate) or ``FEATURE:VERSION``;
    a resumed run keeps the version it started with. ``restart`` discards an unfinished
    run's parts; ``force`` replaces an existing output.
    """
    from aiflywheel.core.registry import get_task
    from aiflywheel.core.versions import load, parse_version_ref
    from aiflywheel.store import open_store

    source, output = Path(source), Path(output)
    if chunk_rows < 1:
        raise DataError(f"--chunk-rows must be at least 1, got {chunk_rows}")
    out_format = table_format(output, what="output")
    table_format(source, what="input")
    if source.resolve() == output.resolve():
        raise DataError(f"--output {output} is the input file; write the predictions elsewhere")
    work = work_dir_of(output)
    if restart and work.exists():
        _remove_tree(work)
    state = _read_state(work)
    if state is None and output.exists() and not force:
        raise ConflictError(
            f"{output} already exists; pass --force to replace it (or choose another --output)"
        )

    feature, asked = parse_version_ref(ref)
    store = store or open_store()
    if state is not None:
        if state["feature"] != feature or (asked is not None and asked != state["version"]):
            raise ConflictError(
                f"{work} holds an unfinished run of {state['feature']} v{state['version']}; "
                "rerun that command to finish it, or pass --restart to discard it"
            )
        asked = state["version"]
    loaded = load(feature, asked, store=store)
    task = get_task(loaded.task)
    if task.batch_input is None:
        raise ModelError(
            f"{feature} is a {loaded.task} feature: it answers in conversation, not over "
            "files; batch prediction covers tasks that answer one input with one prediction"
        )
    column = column or (state or {}).get("column") or task.batch_input
    reader = TableReader(source, column)
    stat = source.stat()
    wanted = {
        "feature": feature,
        "version": loaded.version,
        "task": loaded.task,
        "input": str(source.resolve()),
        "input_format": reader.format,
        "input_size": stat.st_size,
        "input_mtime_ns": stat.st_mtime_ns,
        "column": column,
        "chunk_rows": chunk_rows,
        "output_format": out_format,
    }
    if state is not None:
        changed = [key for key, value in wanted.items() if state.get(key) != value]
        if changed:
            raise ConflictError(
                f"{work} holds an unfinished run whose {', '.join(changed)} differ from this "
                "command's (the input changed?); rerun it as it was, or pass --restart"
            )
    else:
        work.mkdir(parents=True, exist_ok=True)
        state = {
            **wanted,
            "rows": reader.count(),
            "started_at": _now(),
        }
        write_json_atomic(work / STATE_FILE, state)

    columns = ["row", column, "version", "label", "output", "error"]
    parts_dir = work / "parts"
    parts_dir.mkdir(exist_ok=True)
    done_parts = _complete_parts(parts_dir, out_format)
    done = min(len(done_parts) * chunk_rows, state["rows"])
    total = state["rows"]
    if done:
        report(f"resuming after {done:,} of {total:,} rows (v{loaded.version}, as started)")
    recipe = store.get_model_version(feature, loaded.version).recipe or {}
    started = time.perf_counter()
    from tqdm.auto import tqdm

    bar = tqdm(
        total=total,
        initial=done,
        unit="row",
        desc=f"{feature} v{loaded.version}",
        disable=not progress,
    )
    try:
        index = len(done_parts)
        for values in reader.chunks(chunk_rows, skip=done):
            rows = _answer(task, loaded, recipe, column, values, first_row=index * chunk_rows)
            _write_part_atomic(parts_dir, index, out_format, columns, rows)
            index += 1
            bar.update(len(values))
    except KeyboardInterrupt:
        finished = len(_complete_parts(parts_dir, out_format)) * chunk_rows
        raise Interrupted(
            f"batch prediction interrupted after {min(finished, total):,} of {total:,} rows; "
            f"run the same command again to resume (work in {work})"
        ) from None
    finally:
        bar.close()

    parts = _complete_parts(parts_dir, out_format)
    if len(parts) * chunk_rows < total or (total and (len(parts) - 1) * chunk_rows >= total):
        raise DataError(
            f"{source} changed while it was read: {total:,} rows counted at the start, "
            f"{len(parts)} parts of {chunk_rows} written; pass --restart"
        )
    errors = _finish(work, parts, out_format, columns, output)
    manifest = {
        "feature": feature,
        "version": loaded.version,
        "task": loaded.task,
        "status_at_start": loaded.status,
        "input": {
            "path": state["input"],
            "format": state["input_format"],
            "column": column,
            "size": state["input_size"],
            "mtime_ns": state["input_mtime_ns"],
        },
        "output": {"path": str(output.resolve()), "format": out_format, "columns": columns},
        "rows": total,
        "errors": errors,
        "redaction": (
            f"column {column!r} holds each input as the prediction log stores it "
            "(the version's recipe: cleaning, then PII redaction)"
        ),
        "chunk_rows": chunk_rows,
        "started_at": state["started_at"],
        "finished_at": _now(),
    }
    write_json_atomic(manifest_of(output), manifest)
    _remove_tree(work)
    return BatchResult(
        output=output,
        manifest=manifest_of(output),
        feature=feature,
        version=loaded.version,
        rows=total,
        errors=errors,
        resumed_at=done,
        seconds=time.perf_counter() - started,
    )


def _answer(task, loaded, recipe, column: str, values: list[Any], *, first_row: int):
    """Output rows of one chunk: blank or non-text inputs get an error, the rest go to
    the task in one call."""
    rows: list[dict[str, Any]] = []
    texts: list[str] = []
    where: list[int] = []
    for offset, value in enumerate(values):
        text, problem = _as_text(value, column)
        rows.append(
            {
                "row": first_row + offset,
                column: "",
                "version": loaded.version,
                "label": None,
                "output": None,
                "error": problem,
            }
        )
        if problem is None:
            texts.append(text)
            where.append(offset)
    if texts:
        answers = task.predict_batch(loaded.predictor, texts, recipe=recipe)
        if len(answers) != len(texts):
            raise ModelError(
                f"task {loaded.task} answered {len(answers)} of a chunk of {len(texts)} inputs"
            )
        for offset, answer in zip(where, answers, strict=True):
            row = rows[offset]
            row[column] = redact_text(answer.stored)
            if answer.output is None:
                row["error"] = answer.error or "no prediction"
                continue
            payload = task.prediction_payload.model_validate(answer.output).model_dump()
            row["label"] = payload["label"]
            row["output"] = payload
    return rows


def _as_text(value: Any, column: str) -> tuple[str, str | None]:
    if value is None or (isinstance(value, float) and value != value):
        return "", f"no {column!r} value"
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return "", f"{column!r} is a {type(value).__name__}, not text"
    text = value if isinstance(value, str) else str(value)
    if not text.strip():
        return "", f"empty {column!r}"
    return text, None


def _part_name(index: int, fmt: str) -> str:
    return f"part-{index:08d}{PART_SUFFIX[fmt]}"


def _complete_parts(parts_dir: Path, fmt: str) -> list[Path]:
    """The complete parts, in order, from the first: a gap ends the list (parts after a
    gap cannot exist, since parts are written in order; any are ignored and replaced)."""
    found = []
    while (parts_dir / _part_name(len(found), fmt)).is_file():
        found.append(parts_dir / _part_name(len(found), fmt))
    return found


def _write_part_atomic(parts_dir: Path, index: int, fmt: str, columns, rows) -> None:
    final = parts_dir / _part_name(index, fmt)
    temporary = parts_dir / f".{final.name}.{os.getpid()}.tmp"
    try:
        write_part(temporary, fmt, columns, rows)
        _fsync(temporary)
        os.replace(temporary, final)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _finish(work: Path, parts: list[Path], fmt: str, columns, output: Path) -> int:
    """Join the parts onto ``output`` atomically; the number of rows with an error."""
    errors = 0
    for part in parts:
        errors += _count_errors(part, fmt)
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.parent / f".{output.name}.{os.getpid()}.tmp"
    try:
        concatenate(parts, fmt, columns, temporary)
        _fsync(temporary)
        os.replace(temporary, output)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return errors


def _count_errors(part: Path, fmt: str) -> int:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        errors = pq.read_table(part, columns=["error"]).column(0)
        return len(errors) - errors.null_count
    if fmt == "jsonl":
        with part.open(encoding="utf-8") as handle:
            return sum(1 for line in handle if json.loads(line)["error"] is not None)
    import csv

    delimiter = "\t" if fmt == "tsv" else ","
    with part.open(encoding="utf-8", newline="") as handle:
        return sum(1 for record in csv.reader(handle, delimiter=delimiter) if record[-1])


def _fsync(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def _read_state(work: Path) -> dict[str, Any] | None:
    path = work / STATE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise ConflictError(
            f"{path} is not readable JSON; pass --restart to discard the unfinished run"
        ) from None


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


__all__ = ["BatchResult", "DEFAULT_CHUNK_ROWS", "manifest_of", "predict_file", "work_dir_of"]
