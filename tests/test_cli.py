"""The CLI: commands work, and every bad input gives one line and exit 2 (or a counted drop)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aiflywheel.cli import main
from aiflywheel.store import open_store

TICKETS_RECIPE = """\
feature: support-tickets
data:
  source: {source}
  columns: {{text: ticket, label: team, meta: [user_id, channel]}}
clean: {{min_chars: 3}}
split: {{train: 0.6, val: 0.2, test: 0.2, group_by: user_id}}
"""


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _recipe(tmp_path: Path, source: str, body: str | None = None) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(body or TICKETS_RECIPE.format(source=source), encoding="utf-8")
    return path


def _assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    assert "Traceback" not in err
    line = " ".join(err.split())  # rich may wrap a long line on a narrow terminal
    assert line.startswith("error:")
    for fragment in fragments:
        assert fragment in line, (fragment, line)


def test_init_schema_and_validate(tmp_path: Path, capsys) -> None:
    target = tmp_path / "r.yaml"
    code, out, _ = _run(["init", "--template", "csv", "--output", str(target)], capsys)
    assert code == 0 and target.exists()
    code, _, err = _run(["init", "--template", "csv", "--output", str(target)], capsys)
    _assert_one_line_error(code, err, "already exists; pass --force")
    code, _, err = _run(
        ["init", "--template", "nope", "--output", str(tmp_path / "x.yaml")], capsys
    )
    _assert_one_line_error(
        code,
        err,
        "unknown template 'nope'; known: csv, en-reviews, help-center, images, "
        "text-generation, text-to-text, zh-reviews",
    )
    code, out, _ = _run(["init", "--list"], capsys)
    assert "zh-reviews" in out and "en-reviews" in out
    assert "text-generation" in out and "text-to-text" in out
    code, out, _ = _run(["recipe", "schema"], capsys)
    assert code == 0 and json.loads(out)["title"] == "Recipe"
    code, out, _ = _run(["recipe", "validate", str(target)], capsys)
    assert code == 0 and "near_duplicate_threshold: 0.9" in out


def test_data_check_writes_report_and_records_the_run(
    tmp_path: Path, capsys, fixtures_dir: Path
) -> None:
    recipe = _recipe(tmp_path, str(fixtures_dir / "tickets.csv"))
    code, out, err = _run(["data", "check", str(recipe)], capsys)
    assert code == 0, err
    assert "support-tickets" in out and "leakage check" in out
    ((run, name),) = open_store().list_runs()
    assert (run.status, name, run.kind) == ("succeeded", "support-tickets", "data_check")
    run_dir = Path(run.run_dir)
    for part in (
        "dataset.jsonl",
        "splits/train.jsonl",
        "splits/val.jsonl",
        "splits/test.jsonl",
        "data_report.json",
        "data_report.html",
        "recipe.yaml",
    ):
        assert (run_dir / part).is_file(), part
    report = json.loads((run_dir / "data_report.json").read_text(encoding="utf-8"))
    assert report["rows"]["read"] == 53
    assert report["drops"]["empty"] == 1 and report["drops"]["missing_label"] == 1
    assert report["drops"]["too_short"] == 1 and report["drops"]["conflicting_label"] == 2
    assert report["pii"]["hits"]["phone"] == 3 and report["pii"]["hits"]["email"] == 1
    assert report["splits"]["leakage"]["groups_shared"] == 0
    assert report["rows"]["kept"] == sum(p["rows"] for p in report["splits"]["parts"].values())
    codes = {w["code"] for w in report["warnings"]}
    assert {
        "few_examples",
        "few_rows",
        "small_test_set",
        "conflicting_labels",
        "pii_found",
    } <= codes
    assert report["languages"]["zh"] > 0 and report["languages"]["en"] > 0
    dataset = (run_dir / "dataset.jsonl").read_text(encoding="utf-8")
    assert "13812345678" not in dataset and "<PHONE>" in dataset

    code, out, _ = _run(["data", "versions", "support-tickets"], capsys)
    assert code == 0 and report["dataset_version"][:12] in out
    # Same data, same seed: the same dataset version, not a second row.
    assert _run(["data", "check", str(recipe)], capsys)[0] == 0
    assert len(open_store().list_dataset_versions("support-tickets")) == 1
    code, out, _ = _run(["runs", "list"], capsys)
    assert out.count("succeeded") == 2


def test_failed_check_is_recorded_and_leaves_no_folder(
    tmp_path: Path, capsys, flywheel_home: Path
) -> None:
    data = tmp_path / "one.csv"
    data.write_text(
        "ticket,team,user_id,channel\n" + "".join(f"text {i},same,u{i},web\n" for i in range(20))
    )
    code, _, err = _run(["data", "check", str(_recipe(tmp_path, str(data)))], capsys)
    _assert_one_line_error(
        code, err, "label column 'team' has a single class 'same'", "at least 2 classes"
    )
    ((run, _),) = open_store().list_runs()
    assert run.status == "failed" and "single class" in run.error
    parent = Path(run.run_dir).parent
    assert not Path(run.run_dir).exists()
    assert not parent.exists() or not any(p.name.endswith(".partial") for p in parent.iterdir())


def test_out_folder_with_other_files_is_refused(tmp_path: Path, capsys, fixtures_dir: Path) -> None:
    keep = tmp_path / "precious"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    recipe = _recipe(tmp_path, str(fixtures_dir / "tickets.csv"))
    code, _, err = _run(["data", "check", str(recipe), "--out", str(keep)], capsys)
    _assert_one_line_error(code, err, "holds other files")
    assert (keep / "notes.txt").read_text() == "mine"
    out = tmp_path / "report"
    assert _run(["data", "check", str(recipe), "--out", str(out)], capsys)[0] == 0
    assert _run(["data", "check", str(recipe), "--out", str(out)], capsys)[0] == 0
    assert (out / "data_report.html").is_file()


def _gbk_and_utf8(path: Path) -> None:
    lines = ["ticket,team,user_id,channel"] + [f"退款问题 {i},refund,u{i},web" for i in range(3)]
    path.write_bytes(
        ("\n".join(lines) + "\n").encode("utf-8") + "物流太慢了,shipping,u9,web\n".encode("gbk")
    )


BAD_INPUTS = {
    "missing file": (lambda p: None, ["data file not found"]),
    "empty file": (lambda p: p.write_bytes(b""), ["no data rows"]),
    "wrong delimiter": (
        lambda p: p.write_text("ticket;team;user_id;channel\nhi;a;u1;web\n"),
        ["delimiter ','", "set data.delimiter"],
    ),
    "binary renamed csv": (
        lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64)),
        ["binary"],
    ),
    "undecodable": (
        lambda p: p.write_bytes(
            "ticket,team,user_id,channel\n退款问题,refund,u1,web\n物流太慢了,shipping,u2,web\n".encode()
            + b"\xff\xfe bad bytes,a,u3,web\n"
        ),
        ["line 4 cannot be decoded", "re-export the file as UTF-8"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_files_give_one_line_errors(case: str, tmp_path: Path, capsys) -> None:
    make, fragments = BAD_INPUTS[case]
    data = tmp_path / "tickets.csv"
    make(data)
    recipe = _recipe(tmp_path, str(data))
    if case == "wrong delimiter":
        recipe.write_text(recipe.read_text().replace("  source:", "  delimiter: ','\n  source:"))
    code, _, err = _run(["data", "check", str(recipe)], capsys)
    _assert_one_line_error(code, err, *fragments)


def test_absent_column_lists_existing_columns(tmp_path: Path, capsys) -> None:
    data = tmp_path / "t.csv"
    data.write_text("message,team\nhello,a\n")
    code, _, err = _run(["data", "check", str(_recipe(tmp_path, str(data)))], capsys)
    _assert_one_line_error(
        code, err, "column 'ticket' (data.columns.text) not found", "'message', 'team'"
    )


def test_mixed_encodings_are_decoded_and_reported(tmp_path: Path, capsys) -> None:
    data = tmp_path / "t.csv"
    _gbk_and_utf8(data)
    body = (
        "feature: mixed\ndata:\n  source: t.csv\n  columns: {text: ticket, label: team}\n"
        "split: {train: 0.5, val: 0.25, test: 0.25, stratify: false}\n"
    )
    code, out, err = _run(["data", "check", str(_recipe(tmp_path, "", body)), "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    ((run, _),) = open_store().list_runs()
    assert "物流太慢了" in (Path(run.run_dir) / "dataset.jsonl").read_text(encoding="utf-8")
    assert "mixed_encoding" in {w["code"] for w in report["warnings"]}


def test_huge_cell_is_truncated_and_empty_labels_are_counted_drops(tmp_path: Path, capsys) -> None:
    data = tmp_path / "t.csv"
    rows = [f"ticket text {i},{'ab'[i % 2]},u{i},web" for i in range(40)]
    rows.append("x" * 10_000_000 + ",a,u99,web")
    rows.append("no label here,,u98,web")
    rows.append("nan label here,NaN,u97,web")
    data.write_text("ticket,team,user_id,channel\n" + "\n".join(rows) + "\n")
    code, out, err = _run(["data", "check", str(_recipe(tmp_path, str(data)))], capsys)
    assert code == 0, err
    ((run, _),) = open_store().list_runs()
    report = json.loads((Path(run.run_dir) / "data_report.json").read_text(encoding="utf-8"))
    assert report["too_long"]["rows"] == 1 and report["cleaning"]["truncated"] == 1
    assert report["drops"]["too_long"] == 0 and report["drops"]["missing_label"] == 1
    assert "longer than 5,000 chars (truncate): 1 row (2.4%)" in out
    assert "NaN" in report["labels"]["counts"]  # a literal "NaN" string in CSV is a label value


def test_malformed_jsonl_lines_are_reported_by_number(tmp_path: Path, capsys) -> None:
    data = tmp_path / "t.jsonl"
    good = [
        json.dumps(
            {"ticket": f"message {i}", "team": "ab"[i % 2], "user_id": f"u{i}", "channel": "web"}
        )
        for i in range(30)
    ]
    good.insert(4, "{not json")
    good.insert(10, "[1, 2]")
    data.write_text("\n".join(good) + "\n")
    code, out, err = _run(["data", "check", str(_recipe(tmp_path, str(data)))], capsys)
    assert code == 0, err
    ((run, _),) = open_store().list_runs()
    report = json.loads((Path(run.run_dir) / "data_report.json").read_text(encoding="utf-8"))
    assert report["drops"]["malformed"] == 2
    assert [line for line, _ in report["input"]["malformed_lines"]] == [5, 11]
    assert any("lines 5, 11" in w["message"] for w in report["warnings"])


def test_unknown_recipe_key(tmp_path: Path, capsys) -> None:
    recipe = _recipe(tmp_path, "", "feature: x\ndata:\n  source: t.csv\n  colums: {}\n")
    code, _, err = _run(["data", "check", str(recipe)], capsys)
    _assert_one_line_error(code, err, "unknown key 'data.colums'", "allowed here: source")


def test_installed_script_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    script = shutil.which("flywheel", path=str(Path(sys.executable).parent))
    assert script, "the flywheel console script is installed"
    result = subprocess.run(
        [script, "data", "check", str(tmp_path / "missing.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "recipe file not found" in result.stderr


def test_usage_errors_exit_2_in_one_message(capsys) -> None:
    from aiflywheel.cli import main as cli_main

    for args, message in [
        (["runs", "list", "--limit", "abc"], "Invalid value for '--limit'"),
        (["keys", "create", "--role", "root"], "'root' is not one of 'client', 'admin'"),
        (["no-such-command"], "No such command"),
    ]:
        assert cli_main(args) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


def test_predict_reads_texts_from_standard_input(tmp_path: Path, capsys, monkeypatch) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from test_serve import FEATURE, register_tfidf

    register_tfidf(open_store(), tmp_path / "models")
    monkeypatch.setattr(sys, "stdin", io.StringIO("很好 great\n\n  \nterrible 退货\r\n"))
    code, out, _ = _run(["predict", FEATURE, "-"], capsys)
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(line["text"], line["label"]) for line in lines] == [
        ("很好 great", "positive"),
        ("terrible 退货", "negative"),
    ]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n \n"))
    code, _, err = _run(["predict", FEATURE, "-"], capsys)
    _assert_one_line_error(code, err, "DataError", "no texts on standard input")
    code, _, err = _run(["predict", FEATURE, "-", "more"], capsys)
    _assert_one_line_error(code, err, "give it alone, got 2 texts")


def test_tables_are_not_cut_to_80_columns_in_a_pipe(capsys) -> None:
    name = "the nightly batch job that labels every review of the shop"
    open_store().create_api_key("client", name)
    code, out, _ = _run(["keys", "list"], capsys)
    assert code == 0
    assert name in out  # one cell on one line, not wrapped at 80 columns
    assert 80 < max(len(line) for line in out.splitlines()) <= 140


@pytest.mark.parametrize(
    "command",
    [[], ["init"], ["train"], ["promote"], ["serve"], ["models", "list"], ["feedback", "review"]],
)
def test_help_shows_flags_without_a_type(command: list[str], capsys) -> None:
    code, out, _ = _run([*command, "--help"], capsys)
    assert code == 0 and "--help" in out
    assert "<bool>" not in out
