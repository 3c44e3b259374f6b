"""The generator's evaluation report: one self-contained HTML page."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from aiflywheel.files import write_text_atomic


def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _ci(pair: Any) -> str:
    return f"[{_f(pair[0])}, {_f(pair[1])}]" if pair else "–"


def write_report(metrics: dict[str, Any], path: Path, *, title: str) -> None:
    """Systems side by side with CIs, comparisons, per language, sampling, examples."""
    systems = metrics["systems"]
    rows = []
    for key in ("model", "base", "nearest"):
        s = systems[key]
        rows.append(
            "<tr>"
            f"<td>{html.escape(s['name'])}</td>"
            f"<td>{_f(s['chrf'])} {_ci(s['chrf_ci'])}</td>"
            f"<td>{_f(s['rouge_l'])} {_ci(s['rouge_l_ci'])}</td>"
            f"<td>{_f(s.get('perplexity'))}</td>"
            f"<td>{_f(s['length'], 1)}</td>"
            f"<td>{_f(s['repetition'], 3)}</td>"
            f"<td>{_f(s['distinct_2'], 3)}</td>"
            "</tr>"
        )
    comparisons = "".join(
        f"<li>{html.escape(c['verdict'])}: chrF difference {_f(c['diff'])} "
        f"(95% CI {_ci(c['ci'])}, {c['rows']} prompts)</li>"
        for c in metrics["comparisons"].values()
    )
    languages = sorted({lang for s in systems.values() for lang in s["chrf_by_language"]})
    lang_rows = "".join(
        f"<tr><td>{html.escape(lang)}</td>"
        + "".join(
            f"<td>{_f(systems[k]['chrf_by_language'].get(lang, {}).get('chrf'))}</td>"
            for k in ("model", "base", "nearest")
        )
        + f"<td>{systems['model']['chrf_by_language'].get(lang, {}).get('rows', 0)}</td></tr>"
        for lang in languages
    )
    examples = "".join(
        f"<tr><td>{html.escape(e['prompt'])}</td><td>{html.escape(e['reference'])}</td>"
        f"<td>{'<br>'.join(html.escape(t) for t in e['samples'])}</td></tr>"
        for e in systems["model"]["examples"]
    )
    sampling = ", ".join(f"{k} {v}" for k, v in metrics["sampling"].items())
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em}}</style>
</head><body><h1>{html.escape(title)}</h1>
<p><strong>{html.escape(metrics["verdict"])}</strong></p>
<p>{metrics["test_rows"]} held-out rows ({metrics["sampled_prompts"]} sampled); sampling:
{html.escape(sampling)}; base model {html.escape(str(metrics.get("base_model")))},
method {html.escape(str(metrics.get("method")))}, {html.escape(str(metrics.get("prompt_format")))}
prompts.</p>
<h2>Model and baselines (mean per prompt, 95% bootstrap CI)</h2>
<table><tr><th>system</th><th>chrF</th><th>ROUGE-L</th><th>perplexity</th>
<th>length (tokens)</th><th>repetition (3-grams)</th><th>distinct-2</th></tr>
{"".join(rows)}</table>
<h2>Comparisons</h2><ul>{comparisons}</ul>
<h2>chrF per language</h2><table><tr><th>language</th><th>tuned</th><th>untuned</th>
<th>nearest</th><th>prompts</th></tr>{lang_rows}</table>
<h2>Examples (tuned model)</h2><table><tr><th>prompt</th><th>reference</th>
<th>samples</th></tr>{examples}</table>
</body></html>
"""
    write_text_atomic(path, page)
