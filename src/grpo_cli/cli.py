"""`grpo`: the command line. Each command that takes overrides composes and validates the whole config before
it imports torch or loads a model; export, merge and recipes take no configuration.

Overrides are Hydra's KEY=VALUE (`algorithm.group_size=16`, `sampler=vllm`, `recipe=harbor_math`).
User errors print one line `error: ...` on stderr and exit non-zero (2 for configuration), no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from grpo_cli.errors import GrpoError


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr)


def _pass_at(text: str) -> list[int]:
    try:
        ks = [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--pass-at {text!r}: expected integers like 1,12") from None
    if not ks:
        raise argparse.ArgumentTypeError("--pass-at needs at least one k, e.g. 1,12")
    return ks


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number > 0")
    return value


class _InputAndOverrides(argparse.Action):
    """`grpo verify INPUT.jsonl KEY=VALUE...`: the argument without `=` (or naming a file) is the input."""

    def __call__(self, parser, namespace, values, option_string=None):
        inputs = [value for value in values if "=" not in value or os.path.isfile(value)]
        if len(inputs) > 1:
            parser.error(f"one INPUT.jsonl expected, got {' and '.join(inputs)}; overrides are KEY=VALUE")
        namespace.input = inputs[0] if inputs else None
        namespace.overrides = [value for value in values if value not in inputs]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grpo", description="GRPO training on verifiable rewards.")
    parser.add_argument(
        "--recipes-dir", action="append", default=[], metavar="DIR",
        help="extra folder of recipe YAML files (repeatable; also GRPO_RECIPES_PATH=DIR1:DIR2)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help: str, overrides: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        if overrides:
            sub.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. recipe=demo")
        return sub

    command("train", "train with GRPO: sample G per prompt, verify, update, repeat")
    ev = command("eval", "sample n completions per eval prompt and report unbiased pass@k")
    ev.add_argument("--pass-at", type=_pass_at, metavar="K1,K2", help="k values, e.g. 1,12 (sets eval.pass_at)")
    config = command("config", "print the resolved, validated config as YAML")
    config.add_argument(
        "--explain", metavar="KEY",
        help="describe KEY (type, default, allowed values, meaning), or every key under a section such as sampler",
    )
    config.add_argument(
        "--from-trl", metavar="FILE",
        help="print the overrides equivalent to a TRL GRPOConfig saved as JSON or YAML; fields without an equivalent are refused (docs/from-trl.md)",
    )
    command("recipes", "list the recipes with a one-line description", overrides=False)
    verify_help = "score completions against answers with the configured verifier"
    verify = commands.add_parser("verify", help=verify_help, description=verify_help)
    verify.add_argument(
        "overrides", nargs="*", action=_InputAndOverrides, metavar="[INPUT.jsonl] KEY=VALUE",
        help="a JSONL file of rows with completion and answer fields, then config overrides",
    )
    verify.add_argument("--output", "-o", metavar="PATH", help="write one JSON line per row here (default stdout)")
    verify.add_argument("--answer", help="check one: the reference answer")
    verify.add_argument("--completion", help="check one: the model's completion")
    verify.add_argument("--completion-field", default="completion", metavar="NAME", help="default: completion")
    verify.add_argument("--answer-field", default="answer", metavar="NAME", help="default: answer")
    verify.add_argument(
        "--self-test", action="store_true",
        help="score the training data's gold answers and reference solutions, as `grpo train` does at start-up",
    )
    verify.add_argument(
        "--edge-cases", action="store_true",
        help="run the built-in battery of hostile completions against the verifier and custom reward; exit 1 on a failure",
    )
    data = command("data", "write a dataset as JSONL (grpo data harbor --out DIR)", overrides=False)
    # A sub-command, not a positional: argparse cannot follow a positional with `overrides` after --out.
    harbor = data.add_subparsers(dest="dataset", metavar="DATASET", required=True).add_parser(
        "harbor", help="generated warehouse word problems: DIR/train.jsonl and DIR/eval.jsonl"
    )
    harbor.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. recipe=demo")
    harbor.add_argument("--out", required=True, metavar="DIR")
    command("init-model", "build a tiny Llama and a locally trained tokenizer at sft.init_from (else model.name_or_path)")
    command("sft", "supervised cold start on worked solutions")
    export = command(
        "export", "write a plain model directory (LoRA merged) from a run, or from a GGUF file", overrides=False
    )
    export.add_argument("run_dir", metavar="RUN_DIR|FILE.gguf")
    export.add_argument("--checkpoint", default="best", help="best, last or a step number")
    export.add_argument("--out", required=True, metavar="DIR")
    merge = command("merge", "interpolate two model directories: weight*A + (1-weight)*B", overrides=False)
    merge.add_argument("model_a", metavar="A")
    merge.add_argument("model_b", metavar="B")
    merge.add_argument("--weight", type=float, required=True)
    merge.add_argument("--out", required=True, metavar="DIR")
    plan = command("plan", "print the compute budget and a memory estimate before spending GPU hours")
    plan.add_argument("--gpu-memory-gib", type=_positive, metavar="GIB", help="GPU memory (default: the GPU here, else 80)")
    plan.add_argument("--mean-prompt-tokens", type=_positive, metavar="N", help="mean prompt length (default 128)")
    plan.add_argument("--mean-completion-tokens", type=_positive, metavar="N",
                      help="mean completion length (default sampler.max_new_tokens / 2)")
    plan.add_argument("--nproc", type=int, metavar="N",
                      help="GPUs (torchrun ranks) the run shards over with FSDP2 (default: $WORLD_SIZE, else 1)")
    preflight = command("preflight", "sample training prompts x G from the starting model: enough signal to learn? how long?")
    preflight.add_argument("--strict", action="store_true", help="exit 1 when too few groups have a positive reward")
    bench = command("bench", "time a few steps against the bare generate and forward+backward limits (grpo bench recipe=demo)")
    bench.add_argument("--steps", type=int, default=3, metavar="N", help="measured steps after one warm-up step (default 3)")
    bench.add_argument("--json", action="store_true", help="print the report as JSON")
    doctor = command("doctor", "versions, devices, vLLM, code sandbox, free disk: can this configuration run here?")
    doctor.add_argument("--vllm-start", action="store_true", help="also start a vLLM engine on a tiny model (slow)")
    audit = command("audit", "a review sheet of completions with correct answers, for a human to judge the reasoning",
                    overrides=False)
    audit.add_argument("run_dir", nargs="?", metavar="RUN_DIR")
    audit.add_argument("--n", type=int, default=50, help="completions to draw (default 50)")
    audit.add_argument("--checkpoint", metavar="best|last|STEP", help="sample fresh from this checkpoint, not samples.jsonl")
    audit.add_argument("--seed", type=int, default=0)
    audit.add_argument("--out", metavar="DIR", help="where to write sheet.csv and sheet.html (default RUN_DIR/audit)")
    audit.add_argument("--score", metavar="SHEET", help="score a filled sheet: the share judged logically wrong")
    report = command("report", "write RUN_DIR/report/index.html (charts, warnings, samples, summary) and PNG charts", overrides=False)
    report.add_argument("run_dir", metavar="RUN_DIR")
    report.add_argument("compare", nargs="*", metavar="OTHER_RUN", help="runs to compare: their pass@k curves, entropy and pass@k beside RUN_DIR's")
    return parser


# command -> "module:function"; imported only when run, so `grpo config` never imports torch.
HANDLERS = {
    "train": "grpo_cli.training.trainer:train_command",
    "eval": "grpo_cli.training.evaluate:eval_command",
    "verify": "grpo_cli.verifier.cli:verify_command",
    "data": "grpo_cli.data.harbor:data_command",
    "init-model": "grpo_cli.models:init_model_command",
    "sft": "grpo_cli.training.sft:sft_command",
    "export": "grpo_cli.export:export_command",
    "merge": "grpo_cli.export:merge_command",
    "plan": "grpo_cli.diagnostics.plan:plan_command",
    "report": "grpo_cli.monitoring.report:report_command",
    "preflight": "grpo_cli.diagnostics.preflight:preflight_command",
    "doctor": "grpo_cli.diagnostics.doctor:doctor_command",
    "bench": "grpo_cli.diagnostics.bench:bench_command",
    "audit": "grpo_cli.diagnostics.audit:audit_command",
}


def _config(args: argparse.Namespace):
    from grpo_cli.compose import compose

    overrides = list(args.overrides)
    if getattr(args, "pass_at", None):
        overrides.append(f"eval.pass_at=[{','.join(map(str, args.pass_at))}]")
    return compose(overrides, args.recipes_dir)


def _print_config(args: argparse.Namespace) -> None:
    import yaml

    if args.explain is not None:
        return _explain(args.explain)
    if args.from_trl is not None:
        from grpo_cli.from_trl import from_trl_command

        if args.overrides:
            raise GrpoError("--from-trl prints overrides of its own: give the file alone, and add the overrides to them")
        overrides, notes = from_trl_command(args.from_trl)
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        return print(overrides)
    print(yaml.safe_dump(_config(args).to_dict(), sort_keys=False, width=1000), end="")


def _explain(prefix: str) -> None:
    import json

    from grpo_cli.config import key_reference

    for row in key_reference(prefix):
        print(f"{row.key} ({row.type}, default {json.dumps(row.default)})")
        print(f"    {row.help}")
        if row.allowed:
            print(f"    allowed: {row.allowed}")


def _print_recipes(args: argparse.Namespace) -> None:
    from grpo_cli.compose import available_recipes, recipe_description

    for name, path in sorted(available_recipes(args.recipes_dir).items()):
        print(f"{name:<16} {recipe_description(path)}")


def run(argv: list[str]) -> None:
    parser = build_parser()
    # Overrides may come before or after flags (`grpo eval --pass-at 1,12 recipe=demo` and the reverse).
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any("=" not in item or item.startswith("-") for item in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides += extra
    if args.command is None:
        parser.print_help()
        raise SystemExit(2)
    if args.command == "config":
        return _print_config(args)
    if args.command == "recipes":
        return _print_recipes(args)
    if args.command != "train" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise GrpoError(f"grpo {args.command} runs in one process; of the commands only train runs under torchrun")
    # The configuration is validated before the handler's module imports torch, so a mistake is reported at once.
    config = _config(args) if hasattr(args, "overrides") else None
    if config is not None and config.model.name_or_path.endswith(".gguf"):
        from grpo_cli.models import model_source

        # Converted once (cached by content hash): every command after this sees an ordinary checkpoint folder.
        config.model.name_or_path = model_source(config.model.name_or_path)
    module, function = HANDLERS[args.command].split(":")
    handler = getattr(importlib.import_module(module), function)
    if config is not None:
        handler(args, config)
    else:
        handler(args)


def main(argv: list[str] | None = None) -> None:
    warnings.showwarning = _show_warning
    # Our own progress bar and step lines say what is happening; per-file loading bars only bury them.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        run(sys.argv[1:] if argv is None else argv)
    except GrpoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
