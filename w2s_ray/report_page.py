"""report.html: one self-contained page (figures inlined as SVG, no external files or scripts)
with the run's summary, the figures, the tables and the config."""

from __future__ import annotations

import html
import re

import pandas as pd
import yaml

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.8em; }
table { border-collapse: collapse; font-size: .85em; margin: .6em 0 1.2em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; }
th { background: #f3f3f3; } tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1em 0 2em; } figure svg { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: .9em; } pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
.note { color: #555; font-size: .9em; } .wide { overflow-x: auto; }
"""

FIGURE_CAPTIONS = {
    "accuracy_vs_size": "Accuracy per method vs the strong rung, per capability and averaged "
                        "(Burns et al. Fig. 3; Zhou et al. Fig. 8).",
    "pgr": "PGR per pair and method (Zhou et al. Figs. 9, 14).",
    "consistency": "Consistency categories of the weak vs strong labels per pair (Fig. 5/6) and the "
                   "selected set's make-up (Fig. 12).",
    "selection": "The reward model's selection: the selected labels' accuracy and retention vs the "
                 "weak labels' accuracy (Fig. 11).",
}

TABLE_TITLES = {
    "pgr": "Accuracy and PGR (average over capabilities; mean \u00b1 s.e. over seeds)",
    "pgr_by_capability": "Per capability",
    "selection": "Reward-model selection (average over capabilities; gold read for analysis only)",
    "intervals": "95% intervals (bootstrap over test items and seeds) and the differences they resolve",
    "differences": "Every difference between two methods ('*': larger than its 95% interval)",
}


def inline_svg(svg: bytes) -> str:
    """The <svg> element alone: the XML prolog and doctype are not allowed inside HTML."""
    text = svg.decode()
    return text[text.index("<svg"):]


def table_html(frame: pd.DataFrame) -> str:
    return f"<div class='wide'>{frame.to_html(index=False, border=0, na_rep='', escape=True)}</div>"


def interval_note(intervals: pd.DataFrame) -> str:
    """What the intervals cover, which differs with the number of seeds."""
    if intervals.empty or intervals["seeds"].max() > 1:
        return ("<p class='note'>Each interval covers the test sampling error and the seed-to-seed "
                "variance; differences are paired (same items, same seeds).</p>")
    return ("<p class='note'>One seed: the intervals cover the test sampling error only, not the "
            "variation between training seeds, so a 'clearly above' here can still be a seed's luck. "
            "Run more seeds (<code>--seeds 0 1 2</code>) to include it.</p>")


def duration(seconds: float) -> str:
    minutes, sec = divmod(round(seconds), 60)
    return f"{minutes} min {sec} s" if minutes else f"{sec} s"


def summary_html(run: dict | None, rows: pd.DataFrame) -> str:
    pairs = rows[["weak", "strong"]].drop_duplicates()
    methods = run["config"]["methods"] if run else list(pd.unique(rows["method"]))
    facts = {"pairs": ", ".join(f"{w} \u2192 {s}" for w, s in pairs.itertuples(index=False)),
             "seeds": ", ".join(str(s) for s in sorted(rows["seed"].unique())),
             "methods": ", ".join(m for m in methods if m in set(rows["method"]))}
    if run is None:
        note = "<p class='note'>Regenerated from the rows table alone: no run record (run.json) " \
               "beside it, so the config, stage counts and wall time are not known.</p>"
        return note + dl(facts)
    failed = run.get("trials", {}).get("failed", [])
    facts = {"sweep": run["sweep"], "run": run["run_id"], "started": run["started"],
             "wall time": duration(run["wall_seconds"]),
             "trials": f"{run['trials']['finished']} finished, {len(failed)} failed", **facts}
    out = dl(facts)
    if failed:
        out += "<p><b>Failed trials (left out of every table and figure):</b></p><ul>" + "".join(
            f"<li>{html.escape(f)}</li>" for f in failed) + "</ul>"
    return out


def dl(facts: dict[str, str]) -> str:
    return "<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                               for k, v in facts.items()) + "</table>"


def stages_html(run: dict | None) -> str:
    if run is None or not run.get("stages"):
        return "<p class='note'>No stage record for this run.</p>"
    counts = pd.DataFrame(run["stages"]).T.fillna(0).astype(int).rename_axis("stage").reset_index()
    for status in ("built", "reused"):
        if status not in counts:
            counts[status] = 0
    total = counts[["built", "reused"]].sum()
    note = (f"<p>{total['built']} artifacts built, {total['reused']} reused from the store "
            "(a rerun reuses everything it already has).</p>")
    return note + table_html(counts)


#: the throughput table's columns the page shows (throughput.csv has every count)
SPEED_COLUMNS = {"stage": "stage", "rung": "rung", "device": "device", "stages": "stages",
                 "samples_per_s": "samples/s", "tokens_per_s": "tokens/s",
                 "tokens_per_device_s": "tokens per device-s", "assumed_tokens_per_device_s": "assumed (dry run)",
                 "device_s": "device-s", "padding_share": "padding", "mfu": "MFU", "assumed_mfu": "assumed MFU"}


def throughput_html(run: dict | None) -> str:
    if run is None or not run.get("throughput"):
        return "<p class='note'>No stage of this run measured its throughput (every one was reused).</p>"
    frame = pd.DataFrame(run["throughput"])
    shown = frame[[c for c in SPEED_COLUMNS if c in frame]].rename(columns=SPEED_COLUMNS)
    for column in ("samples/s", "tokens/s", "tokens per device-s", "assumed (dry run)", "device-s"):
        shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:,.0f}" if v >= 100 else f"{v:.3g}")
    for column in ("padding", "MFU", "assumed MFU"):
        shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{100 * v:.1f}%")
    note = ("<p class='note'>Per stage kind and model size, the stages this run built. Tokens are trained "
            "tokens (training), generated tokens (generation) or input tokens (scoring); device-s are "
            "compute seconds times the GPUs (on CPU, the worker processes) a stage held. The assumed "
            "figures are the dry run's (A100 bf16), for comparison on GPUs; MFU is left empty on a CPU. "
            "Every count is in throughput.csv, which <code>sweep.measured_throughput</code> hands a "
            "later dry run.</p>")
    return note + table_html(shown)


def page(figures: dict[str, bytes], tables: dict[str, pd.DataFrame], rows: pd.DataFrame,
         run: dict | None) -> str:
    """The report page; `figures` maps a figure name to its SVG bytes."""
    title = f"w2s-ray report: {run['sweep']}" if run else "w2s-ray report"
    parts = [f"<h1>{html.escape(title)}</h1>", "<h2>Run</h2>", summary_html(run, rows), "<h2>Figures</h2>"]
    for name, svg in figures.items():
        caption = FIGURE_CAPTIONS.get(name, name)
        parts.append(f"<figure id='fig-{name}'>{inline_svg(svg)}<figcaption>{html.escape(caption)}"
                     "</figcaption></figure>")
    parts.append("<h2>Tables</h2>")
    for name, table in tables.items():
        parts.append(f"<h3 id='table-{name}'>{html.escape(TABLE_TITLES.get(name, name))}</h3>")
        if name == "intervals":
            parts.append(interval_note(table))
        parts.append(table_html(table))
    parts += ["<h2>Stages (built / reused)</h2>", stages_html(run)]
    parts += ["<h2 id='throughput'>Throughput</h2>", throughput_html(run)]
    if run and run.get("config"):
        config = yaml.safe_dump(run["config"], sort_keys=False)
        parts += ["<h2>Config</h2>", f"<pre>{html.escape(config)}</pre>"]
    body = "\n".join(parts)
    # Inlined SVGs share id names (clip paths): keep each figure's ids its own.
    body = uniquify_ids(body)
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")


def uniquify_ids(body: str) -> str:
    """Prefix the SVG-internal ids of each figure with its figure name, references included."""
    out, last = [], 0
    for match in re.finditer(r"<figure id='fig-([\w-]+)'>(.*?)</figure>", body, flags=re.DOTALL):
        name, inner = match.group(1), match.group(2)
        ids = set(re.findall(r'id="([^"]+)"', inner))
        fixed = re.sub(r'(id="|url\(#|href="#)([^")]+)',
                       lambda m, n=name, i=ids: m.group(1) + (f"{n}-{m.group(2)}" if m.group(2) in i
                                                              else m.group(2)), inner)
        out += [body[last:match.start(2)], fixed]
        last = match.end(2)
    return "".join(out) + body[last:]
