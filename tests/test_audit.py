"""grpo audit: a sheet of correct-answer completions, a page to judge them on, and the score of a filled sheet."""

import csv
import json

import pytest

from conftest import TINY_RUN
from grpo_cli.cli import main
from grpo_cli.compose import compose
from grpo_cli.training.trainer import train
from headless import CHROMIUM, Browser


@pytest.fixture
def run_with_samples(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    groups = [
        {"step": 1, "prompt": "2 + 3?", "answer": "5", "completions": ["2 + 3 = 5\nFINAL: 5", "FINAL: 6"],
         "rewards": [1.0, 0.0], "reasons": ["correct", "wrong"], "advantages": [0.7, -0.7]},
        {"step": 2, "prompt": "7 - 4?", "answer": "3", "completions": ["7 - 4 = 2, so\nFINAL: 3", "no idea", 'say "3", ok\nFINAL: 3'],
         "rewards": [1.0, 0.0, 1.0], "reasons": ["correct", "no_answer", "correct"], "advantages": [0.5, -1.0, 0.5]},
    ]
    (run / "samples.jsonl").write_text("".join(json.dumps(g) + "\n" for g in groups))
    return run


def read_sheet(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_the_sheet_holds_only_correct_completions_and_the_score_is_the_wrong_share(run_with_samples, capsys):
    main(["audit", str(run_with_samples), "--n", "2", "--seed", "1"])
    out = capsys.readouterr().out
    sheet = run_with_samples / "audit" / "sheet.csv"
    assert out.startswith("2 correct-answer completions\n") and f"grpo audit --score {sheet}" in out
    rows = read_sheet(sheet)
    correct = {"2 + 3 = 5\nFINAL: 5", "7 - 4 = 2, so\nFINAL: 3", 'say "3", ok\nFINAL: 3'}
    assert len(rows) == 2 and {row["completion"] for row in rows} < correct
    assert [row["id"] for row in rows] == ["1", "2"] and all(row["verdict"] == "" for row in rows)

    main(["audit", str(run_with_samples), "--n", "50"])
    assert capsys.readouterr().out.startswith("3 correct-answer completions (only 3 scored correct)")
    rows = read_sheet(sheet)
    assert {row["completion"] for row in rows} == correct  # quotes and newlines survive the CSV
    # The reviewer: the chain "7 - 4 = 2, so FINAL: 3" reached the answer by a wrong route.
    for row in rows:
        row["verdict"] = "wrong" if row["completion"].startswith("7 - 4 = 2") else "ok"
    rows[0]["verdict"] = "" if rows[0]["verdict"] == "ok" else rows[0]["verdict"]  # one left unjudged
    with sheet.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=rows[0].keys())
        writer.writeheader()
        writer.writerows(rows)
    judged = [row for row in rows if row["verdict"]]
    main(["audit", "--score", str(sheet)])
    assert capsys.readouterr().out == (
        f"judged {len(judged)} of 3 correct-answer completions: 1 logically wrong despite a correct answer "
        f"({1 / len(judged):.0%}, the reward-hacking signal)\n")


def test_bad_sheets_and_runs_are_one_line_errors(run_with_samples, tmp_path, capsys):
    main(["audit", str(run_with_samples)])
    sheet = run_with_samples / "audit" / "sheet.csv"
    for text, message in [
        (None, "no row has a verdict yet; fill the verdict column with ok or wrong"),
        ("maybe", "verdicts maybe not understood; use ok or wrong (or leave empty)"),
    ]:
        if text:
            rows = read_sheet(sheet)
            rows[0]["verdict"] = text
            with sheet.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=rows[0].keys())
                writer.writeheader()
                writer.writerows(rows)
        with pytest.raises(SystemExit) as exit_info:
            main(["audit", "--score", str(sheet)])
        assert exit_info.value.code == 1
        assert capsys.readouterr().err == f"error: {sheet}: {message}\n"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "samples.jsonl").write_text("")
    with pytest.raises(SystemExit):
        main(["audit", str(tmp_path / "empty")])
    assert "no completion scored correct, nothing to audit; try --checkpoint best" in capsys.readouterr().err


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_the_page_downloads_the_verdicts_as_the_sheet_that_scores(run_with_samples, tmp_path, capsys):
    main(["audit", str(run_with_samples)])
    page = run_with_samples / "audit" / "sheet.html"
    browser = Browser(tmp_path / "chromium")
    try:
        browser.open(page.as_uri())
        downloads = tmp_path / "downloads"
        browser.send("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(downloads))
        browser.js("""(() => { const s = [...document.querySelectorAll('select')];
            s[0].value = 'wrong'; s[0].dispatchEvent(new Event('change'));
            s[1].value = 'ok'; s[1].dispatchEvent(new Event('change'));
            document.getElementById('download').click(); })()""")
        assert browser.js("document.getElementById('progress').textContent") == "2 of 3 judged"
        import time
        deadline = time.monotonic() + 30
        while not (downloads / "sheet.csv").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert browser.errors == []
    finally:
        browser.close()
    capsys.readouterr()
    main(["audit", "--score", str(downloads / "sheet.csv")])
    assert capsys.readouterr().out.startswith("judged 2 of 3 correct-answer completions: 1 logically wrong")
    assert read_sheet(downloads / "sheet.csv")[0]["completion"] == read_sheet(run_with_samples / "audit" / "sheet.csv")[0]["completion"]


def test_fresh_samples_from_a_checkpoint(tiny_model, tmp_path, capsys):
    out = tmp_path / "run"
    train(compose([*TINY_RUN, f"model.name_or_path={tiny_model}", f"train.output_dir={out}", "train.max_steps=1",
                   "sampler.max_new_tokens=8"]))
    capsys.readouterr()
    # The untrained model never answers correctly: 10 x 2 training prompts are tried, none is drawn.
    with pytest.raises(SystemExit):
        main(["audit", str(out), "--checkpoint", "last", "--n", "2"])
    assert capsys.readouterr().err.splitlines()[-1] == f"error: {out}: no completion scored correct, nothing to audit"
