"""The report page, opened in a real headless chromium: charts drawn with data, filters, no script errors."""

import json
import subprocess

import pytest

from conftest import GRPO, TINY_RUN
from grpo_cli.compose import compose
from grpo_cli.monitoring.report import CHARTS, write_report
from grpo_cli.training.trainer import train
from headless import CHROMIUM, Browser

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium; .ci/run installs it)"
)


@pytest.fixture
def browser(tmp_path):
    browser = Browser(tmp_path / "chromium")
    yield browser
    browser.close()


def charts_drawn(browser) -> dict[str, int]:
    """Chart id -> points drawn, counting only charts whose SVG holds a drawn line."""
    return browser.js("""Object.fromEntries([...document.querySelectorAll('.chart')].map(c => [c.id.slice(6),
        c.querySelectorAll('path.series[d^="M"]').length ? +c.querySelector('svg').dataset.points : 0]))""")


def choose(browser, filter_: str = "all", search: str = "", step: str = "all") -> list[list]:
    """Use the sample browser's controls as a user would; [reason, truncated] of each completion shown."""
    return browser.js(f"""(() => {{
        const set = (id, value, event) => {{ const e = document.getElementById(id); e.value = value;
            e.dispatchEvent(new Event(event)); }};
        set('step', {json.dumps(step)}, 'change'); set('filter', {json.dumps(filter_)}, 'change');
        set('search', {json.dumps(search)}, 'input');
        return [...document.querySelectorAll('#samples .completion')].map(c => [c.dataset.reason, c.dataset.truncated === '1']);
    }})()""")


def expected_shown(samples: list[dict], filter_: str, search: str = "") -> int:
    count = 0
    for group in samples:
        for i, text in enumerate(group["completions"]):
            truncated = group.get("truncated", [False] * len(group["completions"]))[i]
            if filter_ == "truncated" and not truncated:
                continue
            if filter_ not in ("all", "truncated") and group["reasons"][i] != filter_:
                continue
            if search and not any(search.lower() in str(t).lower() for t in (group["prompt"], group["answer"], text)):
                continue
            count += 1
    return count


@needs_chromium
def test_a_real_run_writes_a_page_whose_every_chart_has_data(tiny_model, tmp_path, browser):
    out = tmp_path / "run"
    config = compose([*TINY_RUN, f"model.name_or_path={tiny_model}", f"train.output_dir={out}", "train.max_steps=3",
                      "train.eval_every=2", "algorithm.kl_coef=0.04", "sampler.max_new_tokens=12"])
    train(config)
    page = out / "report" / "index.html"
    assert page.exists() and not list(page.parent.glob("*.png"))  # written by the trainer, without PNGs
    assert write_report(out) == page
    for chart in CHARTS:
        assert (out / "report" / f"{chart.id}.png").stat().st_size > 5000, chart.id

    browser.open(page.as_uri())
    assert browser.js("document.getElementById('report-status').textContent") == "ok"
    drawn = charts_drawn(browser)
    assert set(drawn) == {chart.id for chart in CHARTS}
    assert all(points > 0 for points in drawn.values()), drawn
    # 3 steps per training series, 3 evals (steps 0, 2, 3) per eval series.
    assert drawn["kl"] == 3 and drawn["pass_at_k"] == 2 * 3 and drawn["reward"] == 3 + 3 + 3 and drawn["time"] == 4 * 3
    assert drawn["pass_at_k_curve"] == 2 * 2  # pass@1 and pass@2 at step 0 and at step 3

    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    # 2 groups a step, plus the group of the slowest check when it is not one of them.
    assert 3 * 2 <= len(samples) <= 3 * 3 and all(len(group["truncated"]) == 4 for group in samples)
    for filter_ in ("all", "correct", "wrong", "no_answer", "truncated"):
        assert len(choose(browser, filter_)) == expected_shown(samples, filter_), filter_
    # The untrained model writes 12 tokens of noise: every completion is cut off and has no answer.
    assert expected_shown(samples, "truncated") == expected_shown(samples, "all") == 4 * len(samples)
    assert expected_shown(samples, "correct") == 0
    assert browser.errors == []


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records))


@pytest.fixture
def handmade_run(tmp_path):
    """A run in progress with everything a report must survive: a step whose groups were all filtered
    (no loss, clip, entropy), a null, a NaN, old eval key names, a line cut short, an old samples format."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("algorithm:\n  group_size: 2\n")
    write_jsonl(run / "metrics.jsonl", [
        {"step": 1, "reward/mean": 0.5, "clip/low_frac": 0.1, "entropy/mean": 2.0, "loss": 0.3, "warnings": []},
        {"step": 2, "reward/mean": 0.0, "groups/kept_frac": 0.0, "entropy/mean": None, "loss": float("nan"),
         "warnings": ["40% of completions hit sampler.max_new_tokens=24 and were cut off. Fix: raise sampler.max_new_tokens."]},
        {"step": 3, "reward/mean": 0.75, "clip/low_frac": 0.2, "entropy/mean": 1.5, "warnings": []},
    ])
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 4, "reward/me')  # killed mid-write
    write_jsonl(run / "evals.jsonl", [
        {"step": 0, "pass@1": 0.25, "pass@4": 0.5, "mean_reward": 0.2, "truncation_rate": 0.1, "mean_length": 30.0},
        {"step": 2, "pass@1": 0.5, "pass@4": 0.75, "reward/mean": 0.4, "completions/truncated_frac": 0.0,
         "completions/len_mean": 20.0, "warnings": ["eval pass@4 rose +25.0% since the start. Judge the run by pass@1."]},
    ])
    write_jsonl(run / "samples.jsonl", [
        {"step": 1, "prompt": "What is 2 + 3?", "answer": "5", "completions": ["FINAL: 5", "FINAL: 6 </script>"],
         "rewards": [1.0, 0.0], "reasons": ["correct", "wrong"], "advantages": [0.7, -0.7]},
        {"step": 3, "prompt": "What is 7 - 4?", "answer": "3", "completions": ["seven minus", "FINAL: 3", "FINAL: 4"],
         "rewards": [0.0, 1.0, 0.0], "reasons": ["no_answer", "correct", "wrong"], "advantages": [-0.5, 1.0, -0.5],
         "truncated": [True, False, False]},
    ])
    return run


def test_charts_skip_missing_and_non_finite_values_and_read_old_eval_names(handmade_run):
    from grpo_cli.monitoring.report import chart_data, read_run, warning_timeline

    run = read_run(handmade_run)
    charts = {chart["id"]: {s["label"]: s["points"] for s in chart["series"]} for chart in chart_data(run)}
    assert charts["reward"]["mean"] == [[1, 0.5], [2, 0.0], [3, 0.75]]
    assert charts["reward"]["eval mean"] == [[0, 0.2], [2, 0.4]]
    assert charts["entropy"]["mean"] == [[1, 2.0], [3, 1.5]]
    assert charts["clip"] == {"low": [[1, 0.1], [3, 0.2]]}
    assert charts["pass_at_k"] == {"pass@1": [[0, 0.25], [2, 0.5]], "pass@4": [[0, 0.5], [2, 0.75]]}
    assert charts["pass_at_k_curve"] == {"before (step 0)": [[1, 0.25], [4, 0.5]], "latest (step 2)": [[1, 0.5], [4, 0.75]]}
    assert charts["truncation"] == {"eval": [[0, 0.1], [2, 0.0]]}
    assert charts["kl"] == {}
    assert warning_timeline(run) == [
        {"step": 2, "source": "train", "text": "40% of completions hit sampler.max_new_tokens=24 and were cut off.",
         "fix": "raise sampler.max_new_tokens."},
        {"step": 2, "source": "eval", "text": "eval pass@4 rose +25.0% since the start. Judge the run by pass@1.", "fix": ""},
    ]


@needs_chromium
def test_the_sample_browser_filters_and_searches_in_chromium(handmade_run, browser):
    page = write_report(handmade_run)
    browser.open(page.as_uri())
    assert browser.js("document.getElementById('report-status').textContent") == "ok"
    assert choose(browser) == [["correct", False], ["wrong", False], ["no_answer", True], ["correct", False], ["wrong", False]]
    assert choose(browser, "correct") == [["correct", False], ["correct", False]]
    assert choose(browser, "wrong") == [["wrong", False], ["wrong", False]]
    assert choose(browser, "no_answer") == [["no_answer", True]]
    assert choose(browser, "truncated") == [["no_answer", True]]
    assert choose(browser, "all", search="FINAL: 6") == [["wrong", False]]  # case-insensitive; "</script>" intact
    assert choose(browser, "wrong", search="7 - 4") == [["wrong", False]]  # the search matches the prompt
    assert choose(browser, "correct", step="3") == [["correct", False]]
    assert browser.js("document.getElementById('sample-count').textContent") == "1 completions"
    # The state lives in the URL, so the page's reload during a run keeps it.
    assert browser.js("location.hash") == "#step=3&filter=correct&search="
    browser.open(page.as_uri() + "#step=1&filter=wrong&search=")
    assert browser.js("[...document.querySelectorAll('#samples .completion')].map(c => c.textContent)") == [
        "reward 0 · wrong · advantage -0.7FINAL: 6 </script>"]

    drawn = charts_drawn(browser)
    assert drawn["kl"] == 0 and drawn["entropy"] == 2 and drawn["reward"] == 3 + 2
    assert browser.js("document.querySelectorAll('tr.warning').length") == 2
    assert browser.js("document.querySelector('tr.warning .fix').textContent") == "raise sampler.max_new_tokens."
    assert browser.errors == []


def test_grpo_report_prints_the_page_and_refuses_a_folder_without_a_run(handmade_run, tmp_path):
    result = subprocess.run([GRPO, "report", str(handmade_run)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(handmade_run / "report" / "index.html")
    html = (handmade_run / "report" / "index.html").read_text()
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html
    assert (handmade_run / "report" / "reward.png").exists() and not (handmade_run / "report" / "kl.png").exists()

    result = subprocess.run([GRPO, "report", str(tmp_path / "nothing")], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error:") and "Traceback" not in result.stderr


@needs_chromium
def test_transcripts_show_tool_calls_and_outputs_apart_from_the_model_text(tmp_path, browser):
    """A multi-turn group in samples.jsonl: each tool call is marked inside its turn and each tool output
    (an error in red) sits in its own box; a turn without a call is plain text."""
    run = tmp_path / "run"
    run.mkdir()
    calls = [
        [{"role": "model", "text": "<calculator>34 - 28</calculator>"},
         {"role": "tool", "tool": "calculator", "input": "34 - 28", "output": "6", "error": False},
         {"role": "model", "text": "FINAL: 6"}],
        [{"role": "model", "text": "so <calculator>34 -</calculator>"},
         {"role": "tool", "tool": "calculator", "input": "34 -", "output": "error: cannot parse '34 -'", "error": True},
         {"role": "model", "text": "FINAL: 5"}],
        [{"role": "model", "text": "34 - 28 = 6\nFINAL: 6"}],
    ]
    write_jsonl(run / "samples.jsonl", [
        {"step": 1, "prompt": "Bay A has 34 crates. 28 are shipped out. How many are left?", "answer": "6",
         "completions": ["<calculator>34 - 28</calculator>\n<output>6</output>\nFINAL: 6",
                         "so <calculator>34 -</calculator>\n<output>error: cannot parse '34 -'</output>\nFINAL: 5",
                         "34 - 28 = 6\nFINAL: 6"],
         "rewards": [1.0, 0.0, 1.0], "reasons": ["correct", "wrong", "correct"], "advantages": [0.6, -1.2, 0.6],
         "truncated": [False, False, False], "transcripts": calls},
    ])
    browser.open(write_report(run).as_uri())
    assert browser.js("document.getElementById('report-status').textContent") == "ok"
    texts = lambda selector: browser.js(f"[...document.querySelectorAll({json.dumps(selector)})].map(e => e.textContent)")
    assert texts(".tool-call") == ["<calculator>34 - 28</calculator>", "<calculator>34 -</calculator>"]
    assert texts(".tool-output") == ["→ calculator 6", "→ calculator error: cannot parse '34 -'"]
    assert texts(".tool-output.error") == ["→ calculator error: cannot parse '34 -'"]
    assert texts(".turn") == ["<calculator>34 - 28</calculator>", "FINAL: 6", "so <calculator>34 -</calculator>", "FINAL: 5",
                              "34 - 28 = 6\nFINAL: 6"]
    colors = browser.js("""['.turn', '.tool-call', '.tool-output', '.tool-output.error'].map(s =>
        getComputedStyle(document.querySelector(s)).backgroundColor)""")
    assert len(set(colors)) == 4, colors  # the model's text, its calls, outputs and errors all look different
    assert choose(browser, "all", search="cannot parse") == [["wrong", False]]
    assert browser.errors == []


def finished_run(path, before, after, entropy):
    """A finished run folder: evals at steps 0 and 80 with pass@1..3 from `before` and `after`, entropy by step."""
    path.mkdir()
    write_jsonl(path / "metrics.jsonl", [{"step": step, "entropy/mean": value} for step, value in enumerate(entropy, 1)])
    write_jsonl(path / "evals.jsonl", [{"step": step} | {f"pass@{k}": p for k, p in enumerate(curve, 1)}
                                       for step, curve in ((0, before), (80, after))])
    return path


def test_grpo_report_compares_runs_pass_at_k_curves_and_entropy(tmp_path):
    sft = [0.25, 0.4, 0.5]
    passk = finished_run(tmp_path / "demo-hard-passk", sft, [0.4, 0.6, 0.7], [1.2, 1.1])
    grpo = finished_run(tmp_path / "demo-hard", sft, [0.45, 0.55, 0.6], [1.0, 0.8])
    other_start = finished_run(tmp_path / "other-sft", [0.2, 0.3, 0.35], [0.3, 0.4, 0.45], [0.9])
    result = subprocess.run([GRPO, "report", str(passk), str(grpo), str(other_start)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (passk / "report" / "pass_at_k_curve.png").stat().st_size > 5000

    from grpo_cli.monitoring.report import chart_data, read_run

    charts = {chart["id"]: {s["label"]: s["points"] for s in chart["series"]}
              for chart in chart_data(read_run(passk), [read_run(grpo), read_run(other_start)])}
    # one SFT curve for the runs that share it; the run from another start shows its own
    assert charts["pass_at_k_curve"] == {
        "before (step 0)": [[1, 0.25], [2, 0.4], [3, 0.5]],
        "demo-hard-passk: latest (step 80)": [[1, 0.4], [2, 0.6], [3, 0.7]],
        "demo-hard: latest (step 80)": [[1, 0.45], [2, 0.55], [3, 0.6]],
        "other-sft: before (step 0)": [[1, 0.2], [2, 0.3], [3, 0.35]],
        "other-sft: latest (step 80)": [[1, 0.3], [2, 0.4], [3, 0.45]],
    }
    assert charts["entropy"] == {"demo-hard-passk: mean": [[1, 1.2], [2, 1.1]], "demo-hard: mean": [[1, 1.0], [2, 0.8]],
                                 "other-sft: mean": [[1, 0.9]]}
    assert list(charts["pass_at_k"]) == ["pass@1", "pass@2", "pass@3"]  # the other charts are this run's alone
    page = (passk / "report" / "index.html").read_text()
    assert '"compared": [{"name": "demo-hard", "evals": [{"step": 0, "pass@1": 0.25' in page
