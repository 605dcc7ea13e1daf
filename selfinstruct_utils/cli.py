"""``selfinstruct``: run the pipeline, or any of its steps, into a run directory.

Examples::

    selfinstruct demo                                  # embedded LM, 30 instructions, runs/demo
    selfinstruct run --run-dir runs/a --num-instructions 200 --backend embedded
    selfinstruct run --run-dir runs/b --backend openai --model gpt-3.5-turbo-instruct
    selfinstruct run --run-dir runs/c --backend server --base-url http://localhost:8000/v1 --model m
    selfinstruct step classification --run-dir runs/a --backend embedded
    selfinstruct run --run-dir runs/d --backend openai --model gpt-3.5-turbo-instruct --batch-api  # Batch API
    selfinstruct batch export --run-dir runs/e --model m   # offline rounds: vLLM run_batch, then batch import
    selfinstruct summary runs/a
    selfinstruct download                              # seed tasks, user-oriented set, predictions
    selfinstruct download --what paper superni alpaca  # the 82K data, SuperNI test set, Alpaca 52K

Exit status: 0 done; 2 a clear error (one line, no traceback; also bad options); 3 the run ended short of
its target (step 1's request budget ran out: the summary and the manifest say so); 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from pathlib import Path

from .pipeline import STEPS, PipelineConfig, format_summary, run_pipeline
from .session import SERVER_TOKENS_PER_SECOND

DEFAULT_CACHE = Path(os.environ.get("SELFINSTRUCT_CACHE", Path.home() / ".cache" / "selfinstruct-kit" / "lm"))


def _at_least(low: float, kind=int):
    """An argparse type: a number of ``kind`` that is at least ``low`` (refused before anything starts)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
        if value != value or value < low or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{text} is below the least allowed value {low}")
        return value

    return parse


def _fraction(text: str) -> float:
    value = _at_least(0.0, float)(text)
    if value > 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1]")
    return value


def _add_lm_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("language model")
    g.add_argument("--backend", choices=["embedded", "openai", "server"], default="embedded",
                   help="embedded: start llama.cpp with a GGUF; openai: api.openai.com; server: any OpenAI-compatible URL")
    g.add_argument("--model", help="model name (openai/server) ")
    g.add_argument("--base-url", help="server URL ending in /v1 (backend server)")
    g.add_argument("--gguf", help="GGUF file for the embedded backend (default: SmolLM2-135M-Instruct)")
    g.add_argument("--api", choices=["completions", "chat"], default="completions")
    g.add_argument("--concurrency", type=_at_least(1), default=None,
                   help="requests in flight in every step (default: 1 embedded, 8 otherwise); step 1 keeps at most "
                        "--request-batch-size of them in flight")
    g.add_argument("--timeout", type=_at_least(0.001, float), default=None,
                   help="seconds per request (default: derived from max_tokens: 60 + max_tokens / --tokens-per-second)")
    g.add_argument("--extra-body", type=json.loads, default=None, metavar="JSON",
                   help="fields added to every request body, e.g. '{\"cache_prompt\": false}' for a llama.cpp server "
                        "whose answers must not depend on its prompt cache (byte-identical resumes)")
    g.add_argument("--tokens-per-second", type=_at_least(0.001, float), default=None,
                   help="the slowest per-request generation speed to allow for, queueing included, for derived "
                        "timeouts (default: embedded: measured at start / 15; otherwise 2)")
    g.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="response cache folder ('' for none)")


#: CLI option -> PipelineConfig field. Options default to None: an option left out keeps the stored
#: configuration of a run being resumed (or the default of a new run); one given is checked against it.
_CONFIG_OPTIONS = {
    "seed_tasks": "seed_tasks", "num_instructions": "num_instructions", "seed": "seed",
    "request_batch_size": "request_batch_size", "max_requests": "max_requests",
    "rouge_threshold": "rouge_threshold", "rouge_comparison": "rouge_comparison",
    "include_seed_tasks": "include_seed_tasks", "keep_whole_last_batch": "exact_num_instructions",
    "templates": "template_set",
}


def _add_run_args(p: argparse.ArgumentParser, *, demo: bool = False) -> None:
    p.add_argument("--run-dir", default="runs/demo" if demo else None, required=not demo)
    p.add_argument("--seed-tasks", help="seed task JSONL (default: the paper's 175 from the data folder)")
    p.add_argument("--num-instructions", type=_at_least(1), help=f"instructions to keep (default {30 if demo else 100})")
    p.add_argument("--seed", type=int, help="random seed (default 42)")
    p.add_argument("--request-batch-size", type=_at_least(1), help="step-1 requests per pool state (default 4)")
    p.add_argument("--max-requests", type=_at_least(1), help="step-1 request budget (default 20 + 4 x num-instructions)")
    p.add_argument("--rouge-threshold", type=_fraction, help="novelty filter threshold (default 0.7)")
    p.add_argument("--rouge-comparison", choices=["gt", "ge"], help="reject when max ROUGE-L > (gt, default) or >= (ge) it")
    p.add_argument("--keep-whole-last-batch", action="store_const", const=True, default=None,
                   help="keep every novel instruction of step 1's last batch, as the released code (default: exactly N)")
    p.add_argument("--include-seed-tasks", action="store_const", const=True, default=None,
                   help="add the seed tasks' instances to the finetuning data")
    p.add_argument("--templates", choices=["kit", "released"], default=None,
                   help="prompts of steps 1-3: kit (default; the kit's own few-shot examples) or released (the original "
                        "code's, fetched once from its repository; needs internet the first time)")
    p.add_argument("--instruction-max-tokens", type=_at_least(1), default=None, help="step 1 max_tokens (Table 4: 1024)")
    p.add_argument("--instance-max-tokens", type=_at_least(1), default=None, help="step 3 max_tokens (Table 4: 300)")
    p.add_argument("--force-new-config", action="store_true",
                   help="continue a run under a changed configuration (recorded in its manifest)")
    p.add_argument("--no-progress", action="store_true")


def _add_batch_api_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("batch API")
    g.add_argument("--batch-api", action="store_true",
                   help="send each step's requests through the OpenAI Batch API (backends openai and server): steps 2-3 "
                        "as one batch, step 1 as rounds of --request-batch-size; half price at OpenAI, answers within "
                        "24 h; resumable (batch ids in <run-dir>/batches: run the same command again)")
    g.add_argument("--batch-poll", type=_at_least(0.0, float), default=30.0,
                   help="seconds between two polls of a running batch (default 30)")


def _config(args, demo: bool) -> PipelineConfig:
    """The run's configuration: a resumed run's stored one (else the defaults), with the options given."""
    from .runs import stored_config

    stored = stored_config(args.run_dir)
    config = PipelineConfig.from_dict(stored) if stored else (PipelineConfig.demo() if demo else PipelineConfig())
    for option, name in _CONFIG_OPTIONS.items():
        value = getattr(args, option)
        if value is not None:
            setattr(config, name, (not value) if option == "keep_whole_last_batch" else value)
    config.params = dict(config.params)
    if args.instruction_max_tokens:
        config.params["instructions"] = config.params["instructions"].replace(max_tokens=args.instruction_max_tokens)
    if args.instance_max_tokens:
        config.params["instances"] = config.params["instances"].replace(max_tokens=args.instance_max_tokens)
    return config


@contextlib.contextmanager
def _client(args, embedded=None):
    cache = args.cache_dir or None
    if getattr(args, "batch_api", False):
        from .batch import BatchLMClient

        yield BatchLMClient(args.model, base_url=args.base_url if args.backend == "server" else None, api=args.api,
                            state_dir=Path(args.run_dir) / "batches", cache_dir=cache, poll_seconds=args.batch_poll,
                            progress=not args.no_progress), {"backend": args.backend, "batch_api": True}
        return
    if args.backend == "embedded":
        with embedded as lm:
            extra = {"timeout": args.timeout} if args.timeout else {}
            if args.tokens_per_second:
                extra["tokens_per_second"] = args.tokens_per_second
            yield lm.client(api=args.api, cache_dir=cache, max_concurrency=args.concurrency or 1, **extra), lm.describe()
        return
    from .llm import LMClient

    client = LMClient(args.model, base_url=args.base_url if args.backend == "server" else None,
                      api=args.api, cache_dir=cache, max_concurrency=args.concurrency or 8,
                      timeout=args.timeout, tokens_per_second=args.tokens_per_second or SERVER_TOKENS_PER_SECOND,
                      retry_timeouts=False, extra_body=getattr(args, "extra_body", None))
    yield client, {"backend": args.backend}


def _run(args, steps: tuple[str, ...], demo: bool) -> int:
    from .pipeline import check_resumable

    config = _config(args, demo)
    # Every input is checked before a server starts or a folder is created.
    if args.backend != "embedded" and "finetuning" not in steps[:1] and not args.model:
        raise SystemExit("error: --model is required with --backend openai or server")
    if args.backend == "server" and not args.base_url:
        raise SystemExit("error: --base-url is required with --backend server")
    if getattr(args, "batch_api", False) and args.backend == "embedded":
        raise SystemExit("error: --batch-api needs --backend openai or server (the embedded llama.cpp server has no "
                         "Batch API; for an offline cluster run see `selfinstruct batch export`)")
    embedded = None
    identity = None
    if steps == ("finetuning",):
        check_resumable(args.run_dir, config, force_new_config=args.force_new_config)
        run_pipeline(None, args.run_dir, config, steps=steps, progress=not args.no_progress,
                     force_new_config=args.force_new_config, source="cli")
        print(format_summary(args.run_dir))
        return _exit_status(args.run_dir)
    if args.backend == "embedded":
        from .local_lm import EmbeddedLM

        embedded = EmbeddedLM(args.gguf).resolve()
        identity = embedded.identity
    check_resumable(args.run_dir, config, identity=identity, api=args.api,
                    force_new_config=args.force_new_config)
    with _client(args, embedded) as (client, backend):
        run_pipeline(client, args.run_dir, config, steps=steps, backend=backend, progress=not args.no_progress,
                     force_new_config=args.force_new_config, source="cli")
    print(format_summary(args.run_dir))
    return _exit_status(args.run_dir)


def _batch(args) -> int:
    """``selfinstruct batch export|import``: a run's pending requests as a Batch API JSONL, and back."""
    from .batch import export_pending, import_results

    if not args.cache_dir:
        raise SystemExit("error: selfinstruct batch needs a response cache (--cache-dir)")
    if args.batch_command == "import":
        try:
            summary = import_results(args.results, args.cache_dir, args.run_dir)
        except (ValueError, OSError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        steps = ", ".join(f"{s} {n}" for s, n in summary["steps"].items()) or "none"
        print(f"imported {summary['imported']} answers into {args.cache_dir} ({steps})")
        for cid, err in list(summary["errors"].items())[:10]:
            print(f"  failed: {cid}: {err}")
        if summary["errors"]:
            print(f"{len(summary['errors'])} lines failed: the next `selfinstruct batch export` writes them again")
        print("next: selfinstruct batch export with the same options (the next round, or the end of the run)")
        return 0
    config = _config(args, demo=False)
    exported = export_pending(args.run_dir, config, model=args.model, api=args.api, identity=args.identity,
                              cache_dir=args.cache_dir, out=args.out, force_new_config=args.force_new_config,
                              progress=not args.no_progress)
    if exported is None:
        print("nothing to export: every step is done")
        print(format_summary(args.run_dir))
        return _exit_status(args.run_dir)
    print(exported)
    return 0


def _exit_status(run_dir) -> int:
    """0, or EXIT_INCOMPLETE (3) when the run fell short of its target (its manifest says ``incomplete``)."""
    from .pipeline import EXIT_INCOMPLETE
    from .runs import read_manifest

    return EXIT_INCOMPLETE if (read_manifest(run_dir) or {}).get("status") == "incomplete" else 0


def _eval_classifier(args) -> int:
    from .data import seed_tasks_path
    from .prompt_eval import evaluate_classifier
    from .records import load_seed_tasks, write_json_atomic
    from .released import template_set

    seeds = load_seed_tasks(seed_tasks_path(args.seed_tasks))
    sets = [template_set(name) for name in args.templates]  # fetched (or failing) before a server starts
    if args.backend != "embedded" and not args.model:
        raise SystemExit("error: --model is required with --backend openai or server")
    embedded = None
    if args.backend == "embedded":
        from .local_lm import EmbeddedLM

        embedded = EmbeddedLM(args.gguf).resolve()
    rows = []
    with _client(args, embedded) as (client, _):
        for prompts in sets:
            report = evaluate_classifier(client, seeds, templates=prompts, progress=not args.no_progress)
            m = report.metrics
            print(f"templates {prompts.name} ({report.template_hash}), model {report.model}: {m['n']} labelled seed tasks"
                  + (f" ({len(report.left_out)} left out: the template's own examples)" if report.left_out else ""))
            print(f"  accuracy {m['accuracy']:.3f}  precision {m['precision']:.3f}  recall {m['recall']:.3f}  "
                  f"F1 {m['f1']:.3f}  said yes {m['predicted_yes']} (labels: {m['tp'] + m['fn']} yes)  "
                  f"unreadable {m['unreadable']}")
            print(report.confusion().to_string())
            rows.append({**report.row(), "template_hash": report.template_hash, "left_out": report.left_out,
                         "answers": report.answers.to_dict(orient="records")})
    if args.out:
        write_json_atomic(args.out, rows)
        print(f"written: {args.out}")
    return 0


def _tune(args) -> int:
    from .tune import TuneConfig, tune

    config = TuneConfig(epochs=args.epochs, max_steps=args.max_steps, learning_rate=args.lr, batch_size=args.batch_size,
                        max_length=args.max_length, lora_r=args.lora_r, lora_alpha=2 * args.lora_r, seed=args.seed,
                        chat=args.chat)
    result = tune(args.data, args.out, base=args.base, config=config, limit=args.limit, device=args.device,
                  force_new_config=args.force_new_config)
    m = result.manifest
    losses = result.losses()
    print(f"tuned {m['base']['name']} on {m['data']['examples']} examples ({m['data']['instructions']} instructions): "
          f"{m['steps']} steps, {m['totals']['tokens']} tokens, {m['totals']['seconds']:.1f} s"
          + (f", loss {losses['loss'].iloc[0]:.3f} -> {losses['loss'].iloc[-1]:.3f}" if len(losses) else ""))
    print(f"adapter: {result.adapter}")
    return 0


def _evaluate(args) -> int:
    from .data import DATASETS, data_dir
    from .evaluate import evaluate_superni, evaluate_user_oriented, rouge_summary
    from .tune import load_base, load_tuned

    model = load_tuned(args.tuned, device=args.device) if args.tuned else load_base(args.base, device=args.device)
    preds = evaluate_user_oriented(model.model, model.tokenizer, name=args.name, out_dir=args.out, tasks=args.tasks,
                                   max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, chat=args.chat,
                                   identity=model.identity)
    row = rouge_summary(preds).iloc[0]
    print(f"{args.name}: ROUGE-L {row['rougeL']:.3f} [{row['low']:.3f}, {row['high']:.3f}] on {row['tasks']} "
          f"user-oriented tasks; predictions in {args.out}")
    if args.superni is not None:
        rel = DATASETS["SuperNI test set"].path
        path = args.superni or data_dir(must_contain=rel) / rel
        res = evaluate_superni(model.model, model.tokenizer, path, batch_size=args.batch_size)
        print(f"{args.name}: SuperNI ROUGE-L {res['rougeL']:.3f} over {len(res['per_task'])} held-out tasks")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="selfinstruct", description="Self-Instruct (Wang et al., 2022) in one kit.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="the whole pipeline on the 175 seeds with the embedded LM (small settings)")
    _add_run_args(p_demo, demo=True)
    _add_lm_args(p_demo)
    p_run = sub.add_parser("run", help="all four steps")
    _add_run_args(p_run)
    _add_lm_args(p_run)
    _add_batch_api_args(p_run)
    p_step = sub.add_parser("step", help="one step")
    p_step.add_argument("name", choices=STEPS)
    _add_run_args(p_step)
    _add_lm_args(p_step)
    _add_batch_api_args(p_step)
    p_sum = sub.add_parser("summary", help="print a run's summary")
    p_sum.add_argument("run_dir")
    p_dl = sub.add_parser("download", help="download the paper's published data (needs internet)")
    p_dl.add_argument("--what", nargs="+", default=["seeds"], choices=["seeds", "paper", "superni", "alpaca", "all"],
                      help="seeds: seed tasks, user-oriented set, 8 models' predictions; paper: the 82K instances and "
                           "their finetuning data; superni: the SuperNI test set; alpaca: alpaca_data.json")
    p_dl.add_argument("--dest", default=None, help="target folder (default: the user cache, searched by data_dir)")
    p_dl.add_argument("--mirror", default=None, help="base URL standing in for https://raw.githubusercontent.com")
    p_dl.add_argument("--no-check", action="store_true", help="accept a file whose record count differs")

    p_ec = sub.add_parser("eval-classifier", help="measure step 2 on the labelled seed tasks (accuracy, precision, "
                          "recall, F1, confusion table)")
    p_ec.add_argument("--templates", nargs="+", default=["kit"], choices=["kit", "released"])
    p_ec.add_argument("--seed-tasks", help="labelled tasks (default: the paper's 175 seed tasks)")
    p_ec.add_argument("--out", help="JSON file for the figures and every answer")
    p_ec.add_argument("--no-progress", action="store_true")
    _add_lm_args(p_ec)
    p_tune = sub.add_parser("tune", help="step 5: instruction-tune a model with LoRA on generated data (train extra)")
    p_tune.add_argument("data", help="a run directory, a finetuning file, or any dataset file the kit loads")
    p_tune.add_argument("--out", required=True, help="output folder (adapter/, checkpoints/, manifest.json); resumed")
    p_tune.add_argument("--base", default=None, help="Hugging Face model id, model folder or .gguf (default: the "
                        "embedded SmolLM2-135M-Instruct GGUF; with internet: HuggingFaceTB/SmolLM2-135M)")
    p_tune.add_argument("--limit", type=int, default=None, help="train on this many examples (a seeded sample)")
    p_tune.add_argument("--epochs", type=float, default=2.0, help="passes over the data (paper: 2)")
    p_tune.add_argument("--max-steps", type=int, default=-1, help="stop after this many optimizer steps")
    p_tune.add_argument("--lr", type=float, default=3e-4, help="peak learning rate")
    p_tune.add_argument("--batch-size", type=int, default=8)
    p_tune.add_argument("--max-length", type=int, default=256, help="tokens per example")
    p_tune.add_argument("--lora-r", type=int, default=16)
    p_tune.add_argument("--seed", type=int, default=42)
    p_tune.add_argument("--chat", action="store_true", help="encode examples with the tokenizer's chat template")
    p_tune.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p_tune.add_argument("--force-new-config", action="store_true", help="continue --out under another configuration")
    p_ev = sub.add_parser("evaluate", help="answer the 252 user-oriented instructions (and SuperNI) with a model")
    which = p_ev.add_mutually_exclusive_group()
    which.add_argument("--tuned", help="a `selfinstruct tune` output folder")
    which.add_argument("--base", help="an untuned model: Hugging Face id, folder or .gguf (default: the embedded GGUF)")
    p_ev.add_argument("--name", required=True, help="the model's name in the predictions table")
    p_ev.add_argument("--out", required=True, help="folder for <name>_predictions.jsonl")
    p_ev.add_argument("--tasks", type=int, default=None, help="the first N user-oriented tasks (default: all 252)")
    p_ev.add_argument("--max-new-tokens", type=int, default=128)
    p_ev.add_argument("--batch-size", type=int, default=8)
    p_ev.add_argument("--chat", action="store_true", help="prompt through the tokenizer's chat template")
    p_ev.add_argument("--superni", nargs="?", const="", default=None, metavar="FILE",
                      help="also score held-out SuperNI tasks (default file: the downloaded test set)")
    p_ev.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p_rep = sub.add_parser("report", help="one self-contained HTML page comparing datasets at equal size (analysis extra)")
    p_rep.add_argument("data", nargs="+", help="files or run directories (anything the analyses load)")
    p_rep.add_argument("--out", required=True, help="the HTML file to write")
    p_rep.add_argument("--names", nargs="+", default=None, help="one name per dataset (default: registry or file name)")
    p_rep.add_argument("--n", type=int, default=None, help="instructions per subsample (default: the smallest set's)")
    p_rep.add_argument("--repeats", type=int, default=10, help="subsamples per dataset")
    p_rep.add_argument("--seed", type=int, default=0)
    p_rep.add_argument("--seed-tasks", default=None, help="seed tasks for ROUGE-L to the seeds (default: the paper's)")
    p_rep.add_argument("--no-progress", action="store_true")
    p_batch = sub.add_parser("batch", help="run steps 1-3 offline in rounds (e.g. vLLM's run_batch on a cluster): "
                             "export the requests a run needs next as a Batch API JSONL, import the results")
    b_sub = p_batch.add_subparsers(dest="batch_command", required=True)
    p_bx = b_sub.add_parser("export", help="run the steps as far as imported answers go; write the next requests "
                            "(step 1: one round of --request-batch-size; steps 2-3: all remaining)")
    _add_run_args(p_bx)
    p_bx.add_argument("--model", required=True, help="model name written into each request (as the batch runner knows it)")
    p_bx.add_argument("--api", choices=["completions", "chat"], default="completions")
    p_bx.add_argument("--identity", default=None, help="the model's identity in the cache key (default offline:<model>)")
    p_bx.add_argument("--out", default=None, help="JSONL to write (default <run-dir>/batches/export-<step>-<first id>.jsonl)")
    p_bx.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="response cache folder")
    p_bi = b_sub.add_parser("import", help="put a batch run's output JSONL into the response cache")
    p_bi.add_argument("results", help="output JSONL (vLLM run_batch -o, or an OpenAI batch's output file)")
    p_bi.add_argument("--run-dir", required=True, help="the run (its usage log records the imported tokens)")
    p_bi.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="response cache folder")

    args = parser.parse_args(argv)
    try:
        if args.command == "tune":
            return _tune(args)
        if args.command == "eval-classifier":
            return _eval_classifier(args)
        if args.command == "evaluate":
            return _evaluate(args)
        if args.command == "summary":
            print(format_summary(args.run_dir))
            return 0
        if args.command == "report":
            from .report import build_report

            try:
                out = build_report(args.data, args.out, names=args.names, n=args.n, repeats=args.repeats, seed=args.seed,
                                   seed_tasks=args.seed_tasks, progress=not args.no_progress)
            except ValueError as err:  # n larger than a dataset, two datasets with one name
                print(f"error: {err}", file=sys.stderr)
                return 2
            print(f"written: {out}")
            return 0
        if args.command == "download":
            from .download import download

            print(f"downloaded into {download(args.dest, what=args.what, mirror=args.mirror, check=not args.no_check)}")
            return 0
        if args.command == "batch":
            return _batch(args)
        if args.command == "step":
            return _run(args, (args.name,), demo=False)
        return _run(args, STEPS, demo=args.command == "demo")
    except KeyboardInterrupt:
        # A second Ctrl-C would interrupt the clean-up and end in a traceback: ignore it from here.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("\ninterrupted: what was written so far is kept; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as err:  # one clear line, no traceback from deep inside
        from .data import DataNotFoundError
        from .llm import LMRequestError
        from .local_lm import EmbeddedLMError
        from .records import DataFormatError
        from .runs import ConfigChangedError, RunLockedError

        if isinstance(err, DataNotFoundError | DataFormatError | LMRequestError | EmbeddedLMError | ConnectionError
                      | ConfigChangedError | RunLockedError):
            print(f"error: {err}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    raise SystemExit(main())
