"""`acgan`: a thin command line over the library. Bad input -> one line on stderr, exit status 2, no traceback."""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import sys
from pathlib import Path

from pydantic import BaseModel, ValidationError

from acgan import allocator
from acgan.errors import UserError, explain
from acgan.settings import (LOCAL_PARALLELISM, PRESETS, ClusterSettings, CompileSetting, EvalSettings, RunSettings,
                            ServeSettings, SubmitSettings, preset_defaults, value_type)
from acgan.uri import check_uri

INTERRUPTED = {"serve": "stopped serving (Ctrl-C)"}  # what a Ctrl-C ends with; the others: a training command's
# Every option that takes a URI (a store, a data source, a class list, an endpoint): checked where a command starts.
URI_OPTIONS = {"store": "--store", "stores": "STORE", "source": "--source", "class_list": "--class-list",
               "host": "--host", "source_endpoint": "--source-endpoint"}


def _prepare(args: argparse.Namespace) -> dict:
    from acgan.data.prepare import PrepareConfig, continued_prepare_config, prepare, shard_info
    from acgan.store import open_store

    store = open_store(args.store)
    plan = prepare(continued_prepare_config(store, _given(args, PrepareConfig.model_fields)), store)
    infos = [shard_info(store, split) for split in range(len(plan.splits))]
    return {"store": args.store, "classes": plan.num_classes, "splits": len(plan.splits),
            "images": sum(sum(i.images.values()) for i in infos),
            "skipped": sum(sum(i.skipped.values()) for i in infos), "resolution": plan.resolution}


def _train_split(args: argparse.Namespace) -> dict:
    from acgan.store import open_store
    from acgan.training.loop import TrainConfig, train_split

    cfg = TrainConfig.model_validate(_given(args, TrainConfig.model_fields))
    store = open_store(args.store)
    store.ensure_ready()
    return train_split(store, cfg)


def _sample(args: argparse.Namespace) -> None:
    from acgan.ensemble import sample
    from acgan.store import open_store

    store = open_store(args.store)
    store.ensure_ready()
    s = sample(store, args.class_, args.n, args.seed, args.out, args.device, args.raw)
    generator = "trained G" if s["raw"] else "sampling snapshot"
    print(f"{args.n} samples of class {s['class']} ({s['name']}) written to {s['out']}: split {s['split']}'s "
          f"{generator} at step {s['step']}, through the {s['via']}")


def _serve(args: argparse.Namespace) -> None:
    from acgan.serving.server import serve

    # kserve's notice about an API this server does not offer, at every start (kserve/protocol/rest/server.py).
    logging.getLogger("kserve").addFilter(lambda r: r.getMessage() != "OpenAI endpoints not registered")
    serve(ServeSettings.model_validate(_given(args, ServeSettings.model_fields)))


def _run_settings(args: argparse.Namespace) -> RunSettings:
    return RunSettings.model_validate(_given(args, RunSettings.model_fields))


def _cluster_settings(args: argparse.Namespace) -> ClusterSettings:
    return ClusterSettings.model_validate(_given(args, ClusterSettings.model_fields))


def _run(args: argparse.Namespace) -> dict | None:
    from acgan.experiment import continued_settings
    from pipelines.runs import run_local

    if args.parallelism < 1:
        raise UserError(f"--parallelism {args.parallelism}: run at least one task at a time")
    settings = continued_settings(_given(args, RunSettings.model_fields))  # a store's recorded ones, as changed
    return _local_result(run_local(settings, args.pipeline_root, args.parallelism, quiet=not args.verbose),
                         args.verbose)


def _local_result(result: dict, verbose: bool) -> dict | None:
    """What `acgan run` and `acgan rerun --local` end with: the evaluation's summary, where to look, the result as
    JSON with --verbose, else where the task logs are."""
    from acgan.layout import METRICS_KEY, REPORT_KEY
    from acgan.store import LocalStore, open_store
    from pipelines.console import summary_text

    store = open_store(result["store"])
    local_report = Path(store.root) / REPORT_KEY if isinstance(store, LocalStore) else None
    print(summary_text(json.loads(store.read_bytes(METRICS_KEY)), result["report"], result["samples"],
                       local_report))
    if not verbose:
        print(f"task logs:    {result['logs']}")
        return None
    return result


def _compile(args: argparse.Namespace) -> dict:
    from pipelines.runs import compile_pipeline

    cluster = _cluster_settings(args)
    return {"pipeline": str(compile_pipeline(cluster, args.output, args.preset)), "image": cluster.image,
            "preset": args.preset}


def _submit(args: argparse.Namespace) -> dict:
    from pipelines.runs import submit

    return submit(_run_settings(args), _cluster_settings(args), args.host, args.namespace, args.experiment,
                  args.run_name, args.pipeline_id, args.service_account or None, not args.no_preflight,
                  args.require_gpu_quota, **_given(args, SubmitSettings.model_fields))


def _evaluate(args: argparse.Namespace) -> dict:
    from acgan.evaluation.analyses import evaluate
    from acgan.evaluation.report import flat_summary
    from acgan.layout import METRICS_KEY, REPORT_KEY
    from acgan.store import open_store

    settings = EvalSettings.model_validate(_given(args, EvalSettings.model_fields))
    store = open_store(args.store)
    store.ensure_ready()
    summary = evaluate(store, settings)
    print(f"{'metric':<48} value", file=sys.stderr)
    for name, value in flat_summary(summary).items():
        print(f"{name:<48} {'n/a' if value is None else f'{value:.4f}'}", file=sys.stderr)
    return {"metrics": f"{store.uri}/{METRICS_KEY}", "report": f"{store.uri}/{REPORT_KEY}", "summary": summary}


def _compare(args: argparse.Namespace) -> dict:
    from acgan.evaluation.comparison import compare
    from acgan.store import open_store

    if len(args.stores) < 2:
        raise UserError("give two or more stores, trained with different --classes-per-split and evaluated")
    if args.out.suffix.lower() != ".png" or not args.out.parent.is_dir():
        raise UserError(f"--out {args.out}: give a .png file name in an existing directory")
    stores = [open_store(uri) for uri in args.stores]
    for store in stores:
        store.ensure_ready()
    runs, png = compare(stores)
    args.out.write_bytes(png)
    print(f"{'classes per model':>17}  {'MS-SSIM':>8}  {'real':>6}  {'accuracy':>8}  store", file=sys.stderr)
    for r in sorted(runs, key=lambda r: r["classes_per_model"]):
        print(f"{r['classes_per_model']:>17.1f}  {r['ms_ssim_mean']:>8.3f}  {r['real_ms_ssim_mean']:>6.3f}  "
              f"{r['accuracy']:>8.3f}  {r['store']}", file=sys.stderr)
    return {"figure": str(args.out), "runs": runs}


def _bench(args: argparse.Namespace) -> dict:
    import torch

    from acgan_cli.benchmarks.suite import BENCHMARKS, machine_record, run_benchmarks, table

    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is visible; run on a GPU machine or use --device cpu")
    only = [name.strip() for name in args.only.split(",")] if args.only else None
    unknown = sorted(set(only or []) - set(BENCHMARKS))
    if unknown:
        raise UserError(f"--only {','.join(unknown)}: choose from {','.join(BENCHMARKS)}")
    for path in (args.out, args.markdown):
        if path is not None and not path.parent.is_dir():
            raise UserError(f"{path}: directory {path.parent} does not exist")
    device = torch.device(args.device)
    rows = run_benchmarks(device, only)
    record = {"machine": machine_record(device), "rows": [r.model_dump() for r in rows]}
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    if args.markdown:
        m = record["machine"]
        args.markdown.write_text(f"## {m['device']}, {m['date']}, commit {m['commit']}\n\n{m['cpu']}, {m['cores']} "
                                 f"cores, torch {m['torch']}, CUDA {m['cuda'] or '-'}, {m['threads']} threads. "
                                 f"`acgan bench --device {args.device}{f' --only {args.only}' if args.only else ''}`.\n\n{table(rows)}\n")
    print(table(rows), file=sys.stderr)
    print(f"written to {args.out}", file=sys.stderr)
    failed = [r for r in rows if r.error]
    if failed:
        raise UserError(f"{len(failed)} benchmark(s) failed ({'; '.join(f'{r.figure}: {r.error}' for r in failed)}); "
                        f"the other rows are in {args.out}")
    return record["machine"]


def _status(args: argparse.Namespace) -> dict | None:
    from acgan.experiment import split_statuses
    from acgan.store import open_store

    store = open_store(args.store)
    store.ensure_ready()
    statuses = split_statuses(store, args.verify)
    if args.json:
        return {"store": store.uri, "splits": [s.model_dump() for s in statuses]}
    print(f"{'split':>5}  {'classes':<24} {'step / target':>15}  state")
    from acgan.collapse import describe

    for s in statuses:
        classes = ",".join(map(str, s.classes))
        progress = f"{s.step if s.step is not None else '-'} / {s.target if s.target is not None else '?'}"
        print(f"{s.split:>5}  {classes[:24]:<24} {progress:>15}  {s.state}{f' by {s.trainer}' if s.trainer else ''}"
              f"{', COLLAPSING' if s.collapse else ''}")
    done = sum(s.state == "complete" for s in statuses)
    print(f"{done} of {len(statuses)} splits complete")
    for s in statuses:
        if s.collapse:
            print(f"split {s.split}: {describe(s.collapse, store.uri)}")
    return None


def _rerun(args: argparse.Namespace) -> dict:
    from pipelines.runs import rerun

    options = _cluster_settings(args).model_dump(include=set(_given(args, ClusterSettings.model_fields)))
    given = _given(args, CompileSetting.model_fields)
    run_options = CompileSetting.model_validate(given).model_dump(include=set(given))
    result = rerun(args.store, args.host, args.local, options, args.pipeline_root, args.namespace,
                   args.parallelism or LOCAL_PARALLELISM, args.service_account, args.experiment, args.run_name,
                   args.pipeline_id, preflight=not args.no_preflight, run_options=run_options,
                   quiet=not args.verbose, **_given(args, SubmitSettings.model_fields))
    if "pipeline_root" not in result:  # on a cluster, or nothing left to train here
        return result
    return _local_result(result, args.verbose)


def _unlock(args: argparse.Namespace) -> dict:
    from acgan.data.plan import load_plan
    from acgan.lease import unlock
    from acgan.store import open_store

    store = open_store(args.store)
    store.ensure_ready()
    load_plan(store).check_split(args.split)
    removed = unlock(store, args.split, args.force)
    return {"store": store.uri, "split": args.split, "removed": removed}


def _plan(args: argparse.Namespace) -> dict | None:
    from acgan.capacity import PlanInput, make_plan, plan_table

    p = PlanInput.model_validate(_given(args, PlanInput.model_fields))
    plan = make_plan(p)
    if args.images_per_second is None:
        plan.notes.append(f"the throughput is the project's target for one H100 at 128 px ({p.images_per_second:,.0f} "
                          "images/s, bench/RESULTS.md), not a measurement: give --images-per-second with yours "
                          "(`acgan bench --device cuda --only training`, or the images/s `acgan train-split` reports)")
    if args.json:
        return {"input": p.model_dump(), "plan": plan.model_dump()}
    for name, value in plan_table(p, plan):
        print(f"{name:<28} {value}")
    for note in plan.notes:
        print(f"note: {note}")
    return None


def _boolean(text: str) -> bool:
    if text.lower() in ("true", "1", "yes", "on"):
        return True
    if text.lower() in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def _check_uris(args: argparse.Namespace) -> None:
    """The URIs the user gave, each checked once before the command compiles, submits, logs or writes anything:
    a secret inside one is refused in a line that shows it redacted."""
    for name, flag in URI_OPTIONS.items():
        values = getattr(args, name, None)
        for value in values if isinstance(values, list) else [values]:
            if value is not None:
                check_uri(str(value), flag)


def _given(args: argparse.Namespace, fields: dict) -> dict:
    """Only the options the user gave, so the validated model's defaults apply to the rest."""
    return {name: getattr(args, name) for name in fields if getattr(args, name, None) is not None}


def _flag_help(description: str | None, default) -> str:
    """A flag's help: its setting's description, then the default it has here, if any (argparse reads % as a
    format)."""
    if isinstance(default, bool):
        default = str(default).lower()
    elif isinstance(default, list):
        default = ",".join(map(str, default))
    elif isinstance(default, dict):
        default = ",".join(f"{k}={v}" for k, v in default.items())
    shown = f" (default {default})" if default not in (None, "") else ""
    return f"{description or ''}{shown}".replace("%", "%%")


def _spec_options(g, model: type[BaseModel], skip: set[str], defaults: dict | None = None) -> None:
    """One flag per field of a settings model, its help the field's description and the default from `defaults`
    (a preset's values, or the fields' own; None where it depends on more, as on `acgan rerun`): a new setting is
    a new flag. A list is given comma-separated, a mapping as repeated key=value flags."""
    for name, field in model.model_fields.items():
        if name in skip or name == "preset":
            continue
        kind = value_type(field.annotation)
        how = {"action": "append", "metavar": "KEY=VALUE"} if kind is dict else \
            {"type": {bool: _boolean, list: str}.get(kind, kind)}
        g.add_argument(f"--{name.replace('_', '-')}", **how,
                       help=_flag_help(field.description, None if defaults is None else defaults.get(name)))


def _preset_option(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--preset", choices=list(PRESETS), default=default, help=f"named defaults of the settings: "
                   f"{' or '.join(PRESETS)} (default {default}); a setting given as a flag overrides the preset's")


def _settings_options(p: argparse.ArgumentParser, model: type[BaseModel], preset: str, skip: set[str],
                      title: str | None = None) -> None:
    """--preset and the flags of `model`'s settings, each showing its value under `preset`."""
    g = p.add_argument_group(title) if title else p
    _preset_option(g, preset)
    _spec_options(g, model, skip, preset_defaults(model, preset))


def _cluster_options(p: argparse.ArgumentParser, recorded: bool = False) -> None:
    """ClusterSettings' flags; on `acgan rerun` the store's recorded values are the defaults."""
    title = "cluster settings (fixed when the pipeline is compiled" + ("; default: as `acgan submit` recorded them "
                                                                      "in the store)" if recorded else ")")
    _spec_options(p.add_argument_group(title), ClusterSettings, set(),
                  None if recorded else preset_defaults(ClusterSettings, None))


def _service_account_option(p: argparse.ArgumentParser) -> None:
    from pipelines.runs import SERVICE_ACCOUNT

    p.add_argument("--service-account", default=SERVICE_ACCOUNT,
                   help=f"the run's Kubernetes ServiceAccount (default {SERVICE_ACCOUNT}, from manifests/; '' for KFP's)")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage dump), like every other error of the command, and a flag is
    never taken for a longer one it begins (allow_abbrev: `--step 100` is not `--steps 100`); an unknown flag is
    answered with the nearest real one of its command and that command's help."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message: str):
        message = message.replace("\r", "\\r").replace("\n", "\\n")  # a value given with a line break in it
        print(f"{self.prog}: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)

    def parse_args(self, args=None, namespace=None):
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            command = self._command(getattr(parsed, "command", None))
            flag = next((a for a in unknown if a.startswith("-")), unknown[0])
            nearest = _nearest_flag(flag.partition("=")[0], command)
            command.error(f"unrecognized argument {flag}" + (f"; did you mean {nearest}?" if nearest else ""))
        return parsed

    def _command(self, name: str | None) -> argparse.ArgumentParser:
        """The parser of the subcommand `name`, else this one."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction) and name in action.choices:
                return action.choices[name]
        return self


def _nearest_flag(given: str, parser: argparse.ArgumentParser) -> str | None:
    """The option of `parser` a mistyped `given` most likely meant: one it begins or that begins it (`--step`:
    `--steps`; `--num`: `-n`), else the closest spelling (difflib)."""
    flags = [o for a in parser._actions for o in a.option_strings if o not in ("-h", "--help")]
    bare = given.lstrip("-")
    if not bare:
        return None
    prefixed = [f for f in flags if f.lstrip("-").startswith(bare) or bare.startswith(f.lstrip("-"))]
    if prefixed:
        return min(prefixed, key=lambda f: abs(len(f.lstrip("-")) - len(bare)))
    close = difflib.get_close_matches(given, flags, n=1, cutoff=0.6)
    return close[0] if close else None


def _prepare_parser(sub) -> None:
    from acgan.data.prepare import PrepareConfig

    p = sub.add_parser("prepare", help="read a data set into per-split shards and a split plan in the store")
    p.add_argument("--store", required=True, help="a directory, or s3://BUCKET/PREFIX (see ACGAN_S3_ENDPOINT)")
    _settings_options(p, PrepareConfig, "paper", skip={"strict"})
    p.add_argument("--strict", action="store_true", default=None,  # a switch, as the README gives it
                   help=PrepareConfig.model_fields["strict"].description)
    p.set_defaults(run=_prepare, preset=None)  # a store's recorded preset, else paper: only a given one changes it


def _train_split_parser(sub) -> None:
    from acgan.training.loop import TrainConfig

    p = sub.add_parser("train-split", help="train (or continue) the AC-GAN of one class split")
    p.add_argument("--store", required=True)
    p.add_argument("--split", type=int, required=True)
    _settings_options(p, TrainConfig, "paper", skip={"split"})
    p.set_defaults(run=_train_split)


def _run_parser(sub) -> None:
    p = sub.add_parser("run", help="the whole pipeline on this machine (kfp.local): the embedded default")
    p.add_argument("--store", default="./acgan-store", help="default ./acgan-store")
    _settings_options(p, RunSettings, "demo", skip={"store"}, title="run settings (pipeline parameters)")
    p.add_argument("--parallelism", type=int, default=LOCAL_PARALLELISM, help="training tasks at once on this "
                   f"machine, sharing its cores (default {LOCAL_PARALLELISM})")
    p.add_argument("--pipeline-root", type=Path, default=Path("acgan-local-runs"), help="kfp.local's task outputs")
    _verbose_option(p)
    p.set_defaults(run=_run, preset=None)  # a store's recorded preset, else demo: only a given one changes it


def _verbose_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="a local run: every task's full log here, and the result as JSON (default: a progress "
                        "display, task logs in files under PIPELINE_ROOT/logs/, and a summary)")


def _compile_parser(sub) -> None:
    p = sub.add_parser("compile", help="compile the pipeline to a YAML file to upload in the KFP UI")
    p.add_argument("-o", "--output", type=Path, default=Path("acgan-ensemble.yaml"))
    _preset_option(p, "paper")
    _cluster_options(p)
    # No image is published: every pod of a pipeline compiled for a made-up one would wait on its pull for ever.
    image = next(a for a in p._actions if "--image" in a.option_strings)
    image.required, image.help = True, _flag_help(ClusterSettings.model_fields["image"].description, None)
    p.set_defaults(run=_compile)


def _submit_parser(sub) -> None:
    p = sub.add_parser("submit", help="start a run on a Kubeflow Pipelines server")
    p.add_argument("--host", required=True, help="the KFP API endpoint, e.g. https://kfp.example/pipeline")
    p.add_argument("--store", required=True, help="s3://BUCKET/PREFIX that every training pod reaches")
    p.add_argument("--namespace", help="multi-user KFP: the profile namespace the run's pods run in; standalone "
                   "KFP runs them in its own, kubeflow")
    p.add_argument("--experiment", default="acgan-ensemble", help="KFP experiment name")
    p.add_argument("--run-name")
    p.add_argument("--pipeline-id", help="run this already uploaded pipeline instead of compiling one")
    _service_account_option(p)
    p.add_argument("--no-preflight", action="store_true", help="skip asking the Kubernetes API (your kube config) "
                   "whether the namespace has the store's Secret and ConfigMap and the Kueue LocalQueue")
    p.add_argument("--require-gpu-quota", action="store_true", help="preflight: also require a ResourceQuota on "
                   "requests.nvidia.com/gpu that admits a training task")
    _settings_options(p, RunSettings, "paper", skip={"store"}, title="run settings (pipeline parameters)")
    _cluster_options(p)
    _spec_options(p.add_argument_group("submission"), SubmitSettings, set(), preset_defaults(SubmitSettings, None))
    p.set_defaults(run=_submit)


def _status_parser(sub) -> None:
    p = sub.add_parser("status", help="per split: classes, newest complete step / target, state")
    p.add_argument("--store", required=True)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--verify", action="store_true", help="check each split's newest checkpoint against its "
                   "checksums (reads the weights) instead of trusting its completion marker")
    p.set_defaults(run=_status)


def _rerun_parser(sub) -> None:
    p = sub.add_parser("rerun", help="train only the splits that are not complete, then re-assemble the ensemble; "
                       "on a cluster with the settings `acgan submit` recorded in the store, each option given "
                       "replacing its recorded value")
    p.add_argument("--store", required=True)
    p.add_argument("--host", help="a KFP server to run on")
    p.add_argument("--local", action="store_true", help="run on this machine through kfp.local")
    p.add_argument("--namespace", help="default: the recorded one")
    p.add_argument("--experiment", help="KFP experiment name (default: the recorded one)")
    p.add_argument("--run-name")
    p.add_argument("--pipeline-id", help="run this uploaded pipeline (default: the recorded one, else compile here)")
    p.add_argument("--service-account", help="the run's ServiceAccount (default: the recorded one; '' for KFP's)")
    p.add_argument("--pipeline-root", type=Path, default=Path("acgan-local-runs"))
    p.add_argument("--no-preflight", action="store_true", help="on a cluster, skip asking the Kubernetes API "
                   "whether the namespace has what the pods need (as `acgan submit` does)")
    _verbose_option(p)
    _cluster_options(p, recorded=True)
    _spec_options(p.add_argument_group("submission"), SubmitSettings, set(), preset_defaults(SubmitSettings, None))
    _spec_options(p.add_argument_group("run settings (default: the recorded ones)"), CompileSetting, set())
    p.set_defaults(run=_rerun)


def _unlock_parser(sub) -> None:
    p = sub.add_parser("unlock", help="remove a split's lease whose trainer is gone (its lease lapsed, or its process "
                       "on this machine ended), so that a rerun can train the split now")
    p.add_argument("--store", required=True)
    p.add_argument("--split", type=int, required=True)
    p.add_argument("--force", action="store_true", help="also a live lease, for a trainer known to be gone (a lost "
                   "node); a trainer still running stops at its next renewal")
    p.set_defaults(run=_unlock)


def _plan_parser(sub) -> None:
    from acgan.capacity import PlanInput

    p = sub.add_parser("plan", help="GPU-hours, wall time and GPU nodes of a run, from the measured throughput")
    _spec_options(p, PlanInput, set(), preset_defaults(PlanInput, None))
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=_plan)


def _evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="the paper's discriminability and diversity analyses of the ensemble")
    p.add_argument("--store", required=True, help="the store to evaluate, with its ensemble assembled: a directory, "
                   "or s3://BUCKET/PREFIX (see ACGAN_S3_ENDPOINT)")
    _spec_options(p, EvalSettings, set(), preset_defaults(EvalSettings, None))
    p.set_defaults(run=_evaluate)


def _bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="speed benchmarks against their targets: a table, and JSON")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cpu | cuda: where the benchmarks run and "
                   "whose targets they are measured against (default cpu)")
    p.add_argument("--only", help="comma-separated: training,data,ms_ssim,evaluation,run,serve (default all; with "
                                  "--device cuda all but run)")
    p.add_argument("--out", type=Path, default=Path("bench-results.json"), help="the JSON results")
    p.add_argument("--markdown", type=Path, help="also the table as Markdown, with the machine and commit")
    p.set_defaults(run=_bench)


def _compare_parser(sub) -> None:
    p = sub.add_parser("compare", help="the class-split study: mean MS-SSIM against classes per model, over stores")
    p.add_argument("stores", nargs="+", metavar="STORE", help="evaluated stores (acgan evaluate)")
    p.add_argument("--out", type=Path, default=Path("ms-ssim-by-classes-per-model.png"), help="the figure (.png)")
    p.set_defaults(run=_compare)


def _sample_parser(sub) -> None:
    p = sub.add_parser("sample", help="draw samples of one class, through the ensemble when assembled")
    p.add_argument("--store", required=True)
    p.add_argument("--class", dest="class_", required=True, help="class id or class name")
    p.add_argument("-n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help=".png (grid) or .npz (images, labels)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--raw", action="store_true", help="the split's trained G itself rather than its sampling "
                   "snapshot (the averaged G, where the run kept one: --ema-kimg)")
    p.set_defaults(run=_sample)


def _serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve the ensemble over HTTP (Open Inference Protocol v2, KServe), with a "
                       "gallery page at /")
    p.add_argument("--store", required=True, help="a directory, or s3://BUCKET/PREFIX (see ACGAN_S3_ENDPOINT)")
    _spec_options(p, ServeSettings, {"store"}, preset_defaults(ServeSettings, None))
    p.set_defaults(run=_serve)


COMMANDS = (_prepare_parser, _train_split_parser, _run_parser, _compile_parser, _submit_parser, _status_parser,
            _rerun_parser, _unlock_parser, _plan_parser, _evaluate_parser, _bench_parser, _compare_parser,
            _sample_parser, _serve_parser)  # in the order `acgan --help` lists them


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="acgan", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    allocator.tune()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("urllib3", "minio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        _check_uris(args)
        result = args.run(args)
    except (UserError, ValidationError) as e:
        print(f"acgan {args.command}: error: {explain(e)}", file=sys.stderr)
        return getattr(e, "exit_status", 2)  # a run stopped by a signal: the shell's status for it
    except KeyboardInterrupt:
        print(f"acgan {args.command}: {INTERRUPTED.get(args.command, 'interrupted; complete checkpoints are kept')}",
              file=sys.stderr)
        return 130
    if result is not None:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
