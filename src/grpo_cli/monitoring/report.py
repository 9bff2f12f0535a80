"""`grpo report RUN_DIR`: one self-contained page, RUN_DIR/report/index.html, and the same charts as PNG files.

`grpo report RUN_DIR OTHER_RUN ...` compares: the page of RUN_DIR also draws each other run's latest pass@k
curve (and its first one, where that differs from RUN_DIR's) and entropy, and lists its pass@k in the summary.

The page opens from disk with no network: the data is inlined as JSON and drawn as SVG by an inline script.
It reads what a run writes (metrics.jsonl, evals.jsonl, samples.jsonl, summary.json, config.yaml); any of them
may be missing or partial (a run in progress, a step whose groups were all filtered), and a missing key or a
null value only leaves a gap in its chart. `grpo train` rewrites the page after every eval; while the run has
no summary.json the page reloads itself every minute, keeping its filters in the URL's #fragment. The PNG
charts are drawn by `grpo report` only (matplotlib takes seconds).
"""

from __future__ import annotations

import argparse
import html
import json
import math
from dataclasses import dataclass
from pathlib import Path

from grpo_cli.errors import GrpoError

# The page keeps the newest samples up to this much JSON, so a long run's page still opens quickly.
MAX_SAMPLES_BYTES = 20_000_000
# Eval results before the rename to the training vocabulary (see the README's changelog) used these names.
OLD_EVAL_NAMES = {"reward/mean": "mean_reward", "completions/truncated_frac": "truncation_rate", "completions/len_mean": "mean_length"}


@dataclass(frozen=True)
class Series:
    label: str
    source: str  # "metrics" (one point per step) or "evals" (one point per eval)
    key: str


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    series: tuple[Series, ...]
    x_label: str = "step"
    compared: bool = False  # with runs to compare, theirs are drawn too


def _train(label: str, key: str) -> Series:
    return Series(label, "metrics", key)


def _eval(label: str, key: str) -> Series:
    return Series(label, "evals", key)


CHARTS = (
    Chart("reward", "Reward", (_train("mean", "reward/mean"), _train("correct fraction", "reward/correct_mean"),
                               _eval("eval mean", "reward/mean"))),
    # Series are filled in from the eval records: one per pass@k they hold.
    Chart("pass_at_k", "Eval pass@k", ()),
    # pass@k against k at the first eval and the latest: what training did to pass@1 and to pass@k at large k.
    Chart("pass_at_k_curve", "Eval pass@k by k: before vs latest", (), x_label="k", compared=True),
    Chart("kl", "KL to the reference", (_train("mean", "kl/mean"),)),
    Chart("groups", "Groups", (_train("any positive reward", "groups/any_positive_frac"),
                               _train("zero variance", "groups/zero_variance_frac"),
                               _train("kept", "groups/kept_frac"))),
    Chart("clip", "Clip fractions", (_train("low", "clip/low_frac"), _train("high", "clip/high_frac"))),
    Chart("entropy", "Entropy (nats/token)", (_train("mean", "entropy/mean"),), compared=True),
    Chart("length", "Completion length (tokens)", (_train("mean", "completions/len_mean"),
                                                   _train("max", "completions/len_max"),
                                                   _eval("eval mean", "completions/len_mean"))),
    Chart("truncation", "Truncated completions", (_train("train", "completions/truncated_frac"),
                                                   _eval("eval", "completions/truncated_frac"))),
    Chart("logprob_mismatch", "Sampler/learner log-prob mismatch (nats)",
          (_train("mean", "logprob_mismatch/mean"), _train("max", "logprob_mismatch/max"))),
    Chart("time", "Seconds per phase", (_train("sample", "time/sample_s"), _train("verify", "time/verify_s"),
                                         _train("learn", "time/learn_s"), _train("sync", "time/sync_s"),
                                         _train("wait (async)", "time/wait_s"))),
    Chart("throughput", "Tokens per second", (_train("generated", "tokens_per_s"),)),
)


@dataclass
class Run:
    """Everything the report shows, read from a run folder."""

    dir: Path
    metrics: list[dict]
    evals: list[dict]
    samples: list[dict]
    summary: dict | None
    config_text: str


def read_run(run_dir: str | Path) -> Run:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise GrpoError(f"{run_dir} is not a folder; pass the train.output_dir of a run (e.g. runs/demo)")
    if not any((run_dir / name).exists() for name in ("metrics.jsonl", "evals.jsonl", "samples.jsonl", "config.yaml")):
        raise GrpoError(f"{run_dir} holds no run (no metrics.jsonl, evals.jsonl, samples.jsonl or config.yaml); "
                        "pass a train.output_dir")
    summary_path = run_dir / "summary.json"
    config_path = run_dir / "config.yaml"
    return Run(
        dir=run_dir,
        metrics=_read_jsonl(run_dir / "metrics.jsonl"),
        evals=[_with_new_eval_names(record) for record in _read_jsonl(run_dir / "evals.jsonl")],
        samples=_read_jsonl(run_dir / "samples.jsonl"),
        summary=json.loads(summary_path.read_text()) if summary_path.exists() else None,
        config_text=config_path.read_text() if config_path.exists() else "",
    )


def _read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines file; a line cut short by a killed run is skipped."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _with_new_eval_names(record: dict) -> dict:
    return {new: record[old] for new, old in OLD_EVAL_NAMES.items() if old in record} | record


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def chart_data(run: Run, compared: list[Run] = ()) -> list[dict]:
    """Each chart as {id, title, x_label, series: [{label, points: [[x, value], ...]}]}, non-numeric values
    dropped; x is the step, or k for the pass@k curve. With `compared` runs, the charts marked `compared`
    draw theirs too, each series labelled with its run's folder name."""
    pass_at = sorted({key for record in run.evals for key in record if key.startswith("pass@")},
                     key=lambda key: int(key[5:]) if key[5:].isdigit() else 0)
    charts = []
    for chart in CHARTS:
        if chart.id == "pass_at_k_curve":
            charts.append({"id": chart.id, "title": chart.title, "x_label": chart.x_label, "series": pass_at_k_curves(run, compared)})
            continue
        series = chart.series if chart.id != "pass_at_k" else tuple(_eval(key, key) for key in pass_at)
        runs = [run, *compared] if chart.compared else [run]
        drawn = []
        for each in runs:
            prefix = f"{each.dir.name}: " if len(runs) > 1 else ""
            for s in series:
                records = each.metrics if s.source == "metrics" else each.evals
                points = [[record["step"], _number(record.get(s.key))] for record in records if _number(record.get("step")) is not None]
                drawn.append({"label": prefix + s.label, "points": [point for point in points if point[1] is not None]})
        charts.append({"id": chart.id, "title": chart.title, "x_label": chart.x_label, "series": [s for s in drawn if s["points"]]})
    return charts


def pass_at_k_curves(run: Run, compared: list[Run] = ()) -> list[dict]:
    """[{label, points: [[k, pass@k], ...]}] of the first eval ("before") and, once there is another, the
    latest; empty while no eval holds two values of k. Each `compared` run adds its latest curve, and its
    first where that differs from `run`'s (another starting model), labelled with the run's folder name."""
    before, latest = _pass_at_k_points(run.evals[:1]), _pass_at_k_points(run.evals[1:][-1:])
    curves = [{"label": f"{label} (step {record.get('step')})", "points": points}
              for label, (record, points) in (("before", before), ("latest", latest)) if points]
    if compared and len(curves) == 2:
        curves[1]["label"] = f"{run.dir.name}: {curves[1]['label']}"
    for other in compared:
        other_before, other_latest = _pass_at_k_points(other.evals[:1]), _pass_at_k_points(other.evals[1:][-1:])
        shown = [("latest", other_latest)]
        if other_before[1] != before[1]:
            shown.insert(0, ("before", other_before))
        curves += [{"label": f"{other.dir.name}: {label} (step {record.get('step')})", "points": points}
                   for label, (record, points) in shown if points]
    return curves


def _pass_at_k_points(records: list[dict]) -> tuple[dict, list]:
    """The eval record of `records` (at most one) and its [[k, pass@k], ...] by k; [] unless it holds two k."""
    for record in records:
        points = sorted([int(key[5:]), _number(value)] for key, value in record.items()
                        if key.startswith("pass@") and key[5:].isdigit() and _number(value) is not None)
        if len(points) >= 2:
            return record, points
    return {}, []


def warning_timeline(run: Run) -> list[dict]:
    """Every warning as {step, source, text, fix}; the fix is the part after "Fix:" when the warning has one."""
    timeline = []
    for source, records in (("train", run.metrics), ("eval", run.evals)):
        for record in records:
            for line in record.get("warnings") or []:
                text, _, fix = str(line).partition(" Fix: ")
                timeline.append({"step": record.get("step"), "source": source, "text": text, "fix": fix})
    return sorted(timeline, key=lambda warning: warning["step"] or 0)


def sample_groups(run: Run) -> tuple[list[dict], int]:
    """The newest logged groups that fit MAX_SAMPLES_BYTES, oldest first, and how many older ones were left out."""
    kept, size = [], 0
    for group in reversed(run.samples):
        size += len(json.dumps(group))
        if size > MAX_SAMPLES_BYTES:
            break
        kept.append(group)
    return kept[::-1], len(run.samples) - len(kept)


def write_report(run_dir: str | Path, pngs: bool = True, compare: list[str | Path] = ()) -> Path:
    """Write RUN_DIR/report/index.html and, with `pngs`, one PNG per chart with data; returns the page's path.
    `compare`: run folders whose pass@k curves, entropy and pass@k summary the page shows beside this run's.

    matplotlib takes seconds to draw them, so the trainer's refreshes skip them: `grpo report` draws them.
    """
    run = read_run(run_dir)
    compared = [read_run(other) for other in compare]
    out = run.dir / "report"
    out.mkdir(exist_ok=True)
    charts = chart_data(run, compared)
    groups, left_out = sample_groups(run)
    data = {
        "run": str(run.dir),
        "finished": run.summary is not None,
        "last_step": max((record.get("step") or 0 for record in run.metrics), default=0),
        "charts": charts,
        "warnings": warning_timeline(run),
        "samples": groups,
        "samples_left_out": left_out,
        "summary": run.summary,
        "evals": run.evals,
        "compared": [{"name": other.dir.name, "evals": other.evals} for other in compared],
    }
    data["pngs"] = [path.name for path in write_pngs(charts, out)] if pngs else []
    page = out / "index.html"
    tmp = page.with_suffix(".tmp")
    tmp.write_text(_page(data, run.config_text))
    tmp.replace(page)  # a browser reloading mid-write sees the old page or the new one, never half of one
    return page


def write_pngs(charts: list[dict], out: Path) -> list[Path]:
    """The charts with data as PNG files (matplotlib, no display needed); stale ones are removed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for chart in charts:
        path = out / f"{chart['id']}.png"
        if not chart["series"]:
            path.unlink(missing_ok=True)
            continue
        fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
        for series in chart["series"]:
            steps, values = zip(*series["points"])
            ax.plot(steps, values, marker="o" if len(steps) <= 30 else None, markersize=3, label=series["label"])
        ax.set_title(chart["title"])
        ax.set_xlabel(chart["x_label"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


def _finite(value):
    """JSON for the browser: NaN and infinity (a non-finite loss, logged as is) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def _page(data: dict, config_text: str) -> str:
    # "</" inside inlined JSON would end the <script> element early.
    payload = json.dumps(_finite(data), allow_nan=False).replace("</", "<\\/")
    title = html.escape(f"grpo report: {data['run']}")
    return (
        _TEMPLATE.replace("__TITLE__", title)
        .replace("__CONFIG__", html.escape(config_text or "(no config.yaml)"))
        .replace("__DATA__", payload)
    )


def report_command(args: argparse.Namespace) -> None:
    page = write_report(args.run_dir, compare=args.compare)
    print(page)


_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 0 24px 40px; color: #222; }
h1 { font-size: 20px; margin: 16px 0 4px; } h2 { font-size: 16px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; }
#charts { display: flex; flex-wrap: wrap; gap: 12px; }
.chart { border: 1px solid #ddd; border-radius: 4px; padding: 6px; }
.chart h3 { font-size: 13px; margin: 0 0 2px 4px; }
.legend span { margin-right: 10px; font-size: 12px; } .legend i { display: inline-block; width: 10px; height: 10px; margin-right: 3px; }
table { border-collapse: collapse; } td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
.fix { color: #05603a; } .muted { color: #777; }
.group { border: 1px solid #ddd; border-radius: 4px; margin: 8px 0; padding: 6px 10px; }
.completion { white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: 12px; padding: 4px; margin: 4px 0; border-left: 4px solid #bbb; }
.completion.correct { border-color: #2a9d55; } .completion.wrong { border-color: #d1453b; } .completion.no_answer { border-color: #e0a100; }
.tool-call { background: #e7f0fb; color: #174a8b; border-radius: 3px; }
.tool-output { display: block; background: #eef7ee; color: #1d5f32; border-radius: 3px; padding: 1px 4px; margin: 2px 0; }
.tool-output.error { background: #fdecea; color: #9b2a20; }
.prompt { white-space: pre-wrap; } #controls > * { margin-right: 10px; }
pre { background: #f6f6f6; padding: 8px; overflow: auto; max-height: 400px; }
</style></head>
<body>
<h1>__TITLE__</h1>
<div id="state" class="muted"></div>
<h2>Summary</h2><div id="summary"></div>
<h2>Charts</h2><div id="charts"></div>
<h2>Warnings</h2><div id="warnings"></div>
<h2>Samples</h2>
<div id="controls">
 <label>step <select id="step"></select></label>
 <label>show <select id="filter">
  <option value="all">all</option><option value="correct">correct</option><option value="wrong">wrong</option>
  <option value="no_answer">no answer</option><option value="truncated">truncated</option></select></label>
 <label>search <input id="search" type="search" placeholder="prompt, answer or completion text"></label>
 <span id="sample-count" class="muted"></span>
</div>
<div id="samples"></div>
<h2>Resolved config</h2><pre id="config">__CONFIG__</pre>
<div id="report-status" hidden>loading</div>
<script type="application/json" id="data">__DATA__</script>
<script>
"use strict";
const statusEl = document.getElementById("report-status");
window.addEventListener("error", e => { statusEl.textContent = "error: " + e.message; });
const DATA = JSON.parse(document.getElementById("data").textContent);
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];
const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs, text) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}
function fmt(v) {
  if (v === null || v === undefined) return "";
  if (typeof v !== "number") return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a >= 1e5 || a < 1e-3) ? v.toExponential(2) : String(+v.toPrecision(4));
}
function ticks(lo, hi, n, whole) {
  const raw = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  let step = [1, 2, 5, 10].map(m => m * mag).find(s => s >= raw);
  if (whole) step = Math.max(step, 1);  // steps are whole numbers
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(+t.toPrecision(12));
  return out;
}
function drawChart(chart) {
  const W = 520, H = 230, L = 56, R = 12, T = 10, B = 30;
  const box = el("div", {class: "chart", id: "chart-" + chart.id});
  box.appendChild(el("h3", {}, chart.title));
  const svg = el("svg:svg", {width: W, height: H, viewBox: `0 0 ${W} ${H}`});
  const all = chart.series.flatMap(s => s.points);
  svg.setAttribute("data-points", all.length);
  box.appendChild(svg);
  if (!all.length) {
    svg.appendChild(el("svg:text", {x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#999"}, "no data"));
    return box;
  }
  let [x0, x1] = [Math.min(...all.map(p => p[0])), Math.max(...all.map(p => p[0]))];
  let [y0, y1] = [Math.min(...all.map(p => p[1])), Math.max(...all.map(p => p[1]))];
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  if (y0 === y1) { const d = Math.abs(y0) * 0.1 || 1; y0 -= d; y1 += d; }
  const X = x => L + (x - x0) / (x1 - x0) * (W - L - R), Y = y => H - B - (y - y0) / (y1 - y0) * (H - T - B);
  for (const t of ticks(y0, y1, 4)) {
    svg.appendChild(el("svg:line", {x1: L, x2: W - R, y1: Y(t), y2: Y(t), stroke: "#eee"}));
    svg.appendChild(el("svg:text", {x: L - 4, y: Y(t) + 4, "text-anchor": "end", "font-size": 11}, fmt(t)));
  }
  for (const t of ticks(x0, x1, 6, true)) {
    svg.appendChild(el("svg:text", {x: X(t), y: H - B + 14, "text-anchor": "middle", "font-size": 11}, fmt(t)));
  }
  svg.appendChild(el("svg:text", {x: W - R, y: H - 4, "text-anchor": "end", "font-size": 11, fill: "#777"}, chart.x_label));
  svg.appendChild(el("svg:rect", {x: L, y: T, width: W - L - R, height: H - T - B, fill: "none", stroke: "#ccc"}));
  const legend = el("div", {class: "legend"});
  chart.series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const d = s.points.map((p, j) => (j ? "L" : "M") + X(p[0]).toFixed(1) + "," + Y(p[1]).toFixed(1)).join("");
    svg.appendChild(el("svg:path", {d: d, fill: "none", stroke: color, "stroke-width": 1.6, class: "series"}));
    if (s.points.length <= 60) for (const p of s.points) {
      const dot = el("svg:circle", {cx: X(p[0]), cy: Y(p[1]), r: 2.5, fill: color});
      dot.appendChild(el("svg:title", {}, `${s.label} ${chart.x_label} ${p[0]}: ${fmt(p[1])}`));
      svg.appendChild(dot);
    }
    const item = el("span"); item.appendChild(el("i", {style: "background:" + color})); item.append(s.label);
    legend.appendChild(item);
  });
  box.appendChild(legend);
  return box;
}

function renderSummary() {
  const root = document.getElementById("summary");
  const S = DATA.summary;
  document.getElementById("state").textContent = DATA.finished
    ? `finished after step ${DATA.last_step}` : `in progress: step ${DATA.last_step} (this page reloads every minute)`;
  const table = el("table");
  const ks = [...new Set(DATA.evals.flatMap(e => Object.keys(e)).filter(k => k.startsWith("pass@")))];
  if (DATA.evals.length) {
    const first = DATA.evals[0], last = DATA.evals[DATA.evals.length - 1];
    const others = DATA.compared.filter(c => c.evals.length).map(c => [c.name, c.evals[c.evals.length - 1]]);
    const head = el("tr");
    ["metric", `before (step ${first.step})`, `latest (step ${last.step})`, ...others.map(([name, e]) => `${name}: latest (step ${e.step})`)]
      .forEach(h => head.appendChild(el("th", {}, h)));
    table.appendChild(head);
    for (const k of ks) {
      const row = el("tr");
      [k, fmt(S ? S[k + "_before"] : first[k]), fmt(S ? S[k + "_after"] : last[k]), ...others.map(([, e]) => fmt(e[k]))]
        .forEach(v => row.appendChild(el("td", {}, v)));
      table.appendChild(row);
    }
  }
  for (const [label, key] of [["best checkpoint", "best_checkpoint"], ["best step", "best_step"], ["pass@1 at best", "pass@1_best"], ["merged model", "merged_model"]]) {
    if (S && S[key] !== undefined) {
      const row = el("tr"); row.appendChild(el("th", {}, label)); row.appendChild(el("td", {colspan: 2}, fmt(S[key])));
      table.appendChild(row);
    }
  }
  root.appendChild(table.children.length ? table : el("p", {class: "muted"}, "no eval yet"));
  if (DATA.pngs.length) {
    const p = el("p", {class: "muted"}, "PNG: ");
    DATA.pngs.forEach(name => { p.appendChild(el("a", {href: name}, name)); p.append(" "); });
    root.appendChild(p);
  }
}

function renderWarnings() {
  const root = document.getElementById("warnings");
  if (!DATA.warnings.length) { root.appendChild(el("p", {class: "muted"}, "no warnings")); return; }
  const table = el("table", {id: "warning-table"});
  const head = el("tr"); ["step", "from", "warning", "fix"].forEach(h => head.appendChild(el("th", {}, h)));
  table.appendChild(head);
  for (const w of DATA.warnings) {
    const row = el("tr", {class: "warning"});
    row.appendChild(el("td", {}, fmt(w.step))); row.appendChild(el("td", {}, w.source));
    row.appendChild(el("td", {}, w.text)); row.appendChild(el("td", {class: "fix"}, w.fix));
    table.appendChild(row);
  }
  root.appendChild(table);
}

// Per completion: its reason from the verifier, and whether it hit max_new_tokens (older runs did not log it).
function matches(group, i, filter, query) {
  if (filter === "truncated" && !(group.truncated && group.truncated[i])) return false;
  if (filter !== "all" && filter !== "truncated" && group.reasons[i] !== filter) return false;
  if (!query) return true;
  const q = query.toLowerCase();
  return [promptText(group.prompt), group.answer, group.completions[i]].some(t => String(t).toLowerCase().includes(q));
}
// A prompt is text, or chat messages (a dataset in TRL's conversational format): one "[role] content" line each.
function promptText(prompt) {
  return typeof prompt === "string" ? prompt : prompt.map(m => `[${m.role}] ${m.content}`).join("\\n");
}
// A multi-turn rollout (samples.jsonl "transcripts"): model turns as text with the tool call that ends a
// turn marked, and each tool's output (or error) in its own box.
function transcript(records) {
  const nodes = [];
  records.forEach((r, k) => {
    if (r.role === "tool") {
      const label = (r.tool || "tool") + (r.error ? " error" : "") + (r.input != null ? ": " + r.input : "");
      const box = el("span", {class: "tool-output" + (r.error ? " error" : ""), title: label});
      box.append(el("span", {class: "muted"}, "→ " + (r.tool || "tool") + " "), r.output);
      nodes.push(box);
      return;
    }
    const next = records[k + 1];
    const open = next && next.role === "tool" && next.tool
      ? Math.max(r.text.lastIndexOf("<tool_call>"), r.text.lastIndexOf("<" + next.tool + ">")) : -1;
    const turn = el("span", {class: "turn"}, open < 0 ? r.text : r.text.slice(0, open));
    if (open >= 0) turn.appendChild(el("span", {class: "tool-call"}, r.text.slice(open)));
    nodes.push(turn);
  });
  return nodes;
}
function renderSamples() {
  const state = new URLSearchParams(location.hash.slice(1));
  const stepSel = document.getElementById("step"), filterSel = document.getElementById("filter"), search = document.getElementById("search");
  const steps = [...new Set(DATA.samples.map(g => g.step))];
  stepSel.appendChild(el("option", {value: "all"}, "all"));
  steps.forEach(s => stepSel.appendChild(el("option", {value: s}, s)));
  stepSel.value = state.get("step") || "all"; filterSel.value = state.get("filter") || "all"; search.value = state.get("search") || "";
  const root = document.getElementById("samples");
  function update() {
    const params = new URLSearchParams({step: stepSel.value, filter: filterSel.value, search: search.value});
    history.replaceState(null, "", "#" + params);
    root.replaceChildren();
    let shown = 0;
    for (const g of DATA.samples) {
      if (stepSel.value !== "all" && String(g.step) !== stepSel.value) continue;
      const idx = g.completions.map((_, i) => i).filter(i => matches(g, i, filterSel.value, search.value));
      if (!idx.length) continue;
      const box = el("div", {class: "group"});
      box.appendChild(el("div", {class: "muted"}, `step ${g.step} · answer ${g.answer}`));
      box.appendChild(el("div", {class: "prompt"}, promptText(g.prompt)));
      for (const i of idx) {
        const trunc = g.truncated && g.truncated[i];
        const c = el("div", {class: "completion " + g.reasons[i], "data-reason": g.reasons[i], "data-truncated": trunc ? 1 : 0});
        c.appendChild(el("div", {class: "muted"}, `reward ${fmt(g.rewards[i])} · ${g.reasons[i]} · advantage ${fmt(g.advantages[i])}${trunc ? " · truncated" : ""}`));
        if (g.transcripts && g.transcripts[i]) c.append(...transcript(g.transcripts[i]));
        else c.append(g.completions[i]);
        box.appendChild(c);
        shown++;
      }
      root.appendChild(box);
    }
    document.getElementById("sample-count").textContent = `${shown} completions` +
      (DATA.samples_left_out ? ` (${DATA.samples_left_out} older groups left out of this page)` : "");
    statusEl.setAttribute("data-shown", shown);
  }
  [stepSel, filterSel].forEach(s => s.addEventListener("change", update));
  search.addEventListener("input", update);
  update();
}

const charts = document.getElementById("charts");
DATA.charts.forEach(c => charts.appendChild(drawChart(c)));
renderSummary();
renderWarnings();
renderSamples();
if (!DATA.finished) setTimeout(() => location.reload(), 60000);
if (!statusEl.textContent.startsWith("error")) statusEl.textContent = "ok";
</script>
</body></html>
"""
