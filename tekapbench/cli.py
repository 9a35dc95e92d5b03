"""tekapbench: benchmark knowledge distillation and TeKAP from declarative suites."""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from tekapbench import __version__
from tekapbench.errors import Interrupted, TekapbenchError
from tekapbench.registry import UnknownNameError


def _cmd_run(args: argparse.Namespace) -> int:
    from tekapbench.engine.runner import SuiteRunner, pick_device
    from tekapbench.errors import UsageError
    from tekapbench.execution import EXECUTORS, Request
    from tekapbench.progress import Progress
    from tekapbench.suite.plan import plan_suite

    from tekapbench.suite.schema import MAX_THREADS

    for name in ("threads", "workers"):
        value = getattr(args, name)
        if value is not None and not 1 <= value <= MAX_THREADS:
            raise UsageError(f"--{name} {value}: give a number from 1 to {MAX_THREADS}")
    executor = EXECUTORS.get(args.executor)
    if args.worker and args.executor != "local":
        raise UsageError("--worker is for the local executor's own worker processes")
    plan = plan_suite(args.suite)
    for note in plan.notes:
        print(f"note: {plan.source}: {note}", file=sys.stderr)
    slurm = {**plan.slurm, **_key_values(args.slurm, "--slurm")}
    if args.executor == "slurm":
        _check_slurm_settings(slurm)
    device = pick_device(args.device)
    if args.dry_run:
        runner = SuiteRunner(plan, results_root=args.results, device=device, force=args.force,
                             progress=Progress(quiet=True))
        pending = set(runner.pending())
        evaluations = sum(map(len, runner.pending_evaluations(pending).values()))
        where = "Slurm" if args.executor == "slurm" else str(device)
        print(f"suite {plan.name} ({plan.source}): {len(plan.runs)} runs, {len(pending)} to run on {where}, "
              f"{evaluations} evaluation(s) to compute")
        for run_id, spec in plan.runs.items():
            rows = "/".join(dict.fromkeys(c.row for c in plan.cells if c.run_id == run_id)) or (
                "(assistant)" if spec.teachers else "(ensemble)")
            what = spec.method.describe() if spec.method else f"checkpoint {spec.checkpoint}"
            seed = "" if spec.seed is None else f"seed {spec.seed}"
            state = "to run" if run_id in pending else "done"
            print(f"  {run_id}  {state:6}  {spec.dataset:9} {spec.arch:14} {seed:7} {rows:16} {what}")
        return 0
    executor(Request(suite_path=Path(args.suite), plan=plan, results_root=Path(args.results), device=args.device,
                     force=args.force, threads=args.threads, quiet=args.quiet,
                     workers=1 if args.worker else args.workers, detach=args.detach, slurm=slurm,
                     force_before=args.force_before))
    if not args.quiet and not args.worker and not args.detach:
        from tekapbench.tables.build import suite_tables
        from tekapbench.tables.formats import FORMATS

        print(FORMATS.get("github")(suite_tables(Path(args.results), plan.name)))
    return 0


def _check_slurm_settings(settings: dict[str, object]) -> None:
    from pydantic import ValidationError

    from tekapbench.errors import UsageError, validation_problems
    from tekapbench.suite.schema import SlurmSection

    try:
        SlurmSection.model_validate(settings)
    except ValidationError as exc:
        problems = validation_problems(exc)
        raise UsageError(f"--slurm (over the suite's [slurm]): {problems}; allowed keys: "
                         f"{', '.join(SlurmSection.model_fields)}") from None


def _key_values(items: list[str], option: str) -> dict[str, object]:
    """``KEY=VALUE`` pairs; a value is read as TOML when it parses (2, 1.5, true, ["a"]), else as text."""
    import tomllib

    from tekapbench.errors import UsageError

    parsed: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{option} {item!r}: expected KEY=VALUE")
        try:
            parsed[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            parsed[key.strip()] = value
    return parsed


def _cmd_status(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from tekapbench.errors import UsageError
    from tekapbench.execution.slurm import queue_lookup
    from tekapbench.results.status import STATES, suite_status
    from tekapbench.results.store import ResultStore

    if args.suite.endswith(".toml") or Path(args.suite).is_file():
        from tekapbench.suite.plan import plan_suite

        plan = plan_suite(args.suite).to_dict()
    else:
        plan = ResultStore(args.results, args.suite).read_plan()
        if plan is None:
            raise UsageError(f"no plan for suite {args.suite!r} under {args.results}/: give the suite file, or run it "
                             f"first")
    store = ResultStore(args.results, plan["suite"])
    statuses = suite_status(plan, store, queue_lookup(store))
    rows = [[s.run_id, s.state, s.dataset, s.arch, "" if s.seed is None else s.seed, s.rows, s.detail]
            for s in statuses]
    print(tabulate(rows, headers=["run", "state", "dataset", "arch", "seed", "rows", "detail"], tablefmt="simple",
                   disable_numparse=True))
    counts = {state: sum(s.state == state for s in statuses) for state in STATES}
    print(f"suite {plan['suite']}: {len(statuses)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    return 0


def _cmd_table(args: argparse.Namespace) -> int:
    from tekapbench.tables.build import all_tables
    from tekapbench.tables.formats import FORMATS
    from tekapbench.tables.layouts import LAYOUTS

    render = FORMATS.get(args.format)
    if args.layout is not None:
        LAYOUTS.get(args.layout)
    tables = [t for _, suite_tables in all_tables(Path(args.results), args.suite, metric=args.metric,
                                                   layout=args.layout) for t in suite_tables]
    if args.delta:
        from tekapbench.tables.base import with_delta

        tables = [with_delta(t, args.delta) for t in tables]
    if args.compare == "paper":
        from tekapbench.tables.paper import load_published, with_published

        published = load_published(Path(args.paper))
        tables = [with_published(t, published) for t in tables]
    print(render(tables))
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from tekapbench.atomic import atomic_path
    from tekapbench.errors import UsageError
    from tekapbench.plots import PLOTS
    from tekapbench.tables.build import chosen_suites, suite_results

    kinds = args.kind or PLOTS.names()
    for kind in kinds:
        PLOTS.get(kind)
    written = 0
    for suite in chosen_suites(Path(args.results), args.suite):
        _, cells, results = suite_results(Path(args.results), suite)
        out = Path(args.out) if args.out else Path(args.results) / suite / "plots"
        for kind in kinds:
            for name, figure in PLOTS.get(kind)(cells, results).items():
                for ext in ("png", "pdf"):
                    target = out / f"{name}.{ext}"
                    with atomic_path(target) as tmp:
                        figure.savefig(tmp, format=ext, dpi=150)
                    print(target)
                written += 1
    if not written:
        raise UsageError(f"nothing to plot under {args.results}/ for {', '.join(kinds)}: the plots need training "
                         f"histories, adversarial or shot_groups evaluations")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from tekapbench.errors import UsageError
    from tekapbench import regression as gates

    if args.baseline is None and args.benchmarks is None:
        raise UsageError("nothing to check: give --baseline FILE (results against a baseline) and/or "
                         "--benchmarks FILE (speed ratios of a pytest-benchmark JSON file)")
    if args.update and args.baseline is None:
        raise UsageError("--update writes the file named by --baseline; give --baseline FILE")
    rules = [gates.parse_cli_rule(text) for text in args.tolerance]
    failed = False
    if args.baseline is not None:
        args.baseline = gates.baseline_path(args.baseline, writing=args.update)
        suites = [args.suite] if args.suite else None
        if args.update:
            from tekapbench.tables.build import chosen_suites

            suites = chosen_suites(Path(args.results), args.suite)  # an error when there is nothing to write
        measured = gates.measure(args.results, suites)
        for note in measured.notes:
            print(f"note: {note}", file=sys.stderr)
        if args.update:
            if measured.unfinished:
                what = ", ".join(f"{suite} ({n})" for suite, n in measured.unfinished.items())
                raise UsageError(f"{args.results}/: runs or evaluations not finished in {what}; finish them with "
                                 f"`tekapbench run SUITE.toml` before writing a baseline from them")
            previous = gates.read_baseline(args.baseline) if args.baseline.exists() else None
            written = gates.write_baseline(args.baseline, measured, keep=previous,
                                           suites=[args.suite] if args.suite else None)
            metrics = sum(map(len, written.groups.values()))
            print(f"wrote {args.baseline}: {metrics} metric(s) in {len(written.groups)} group(s) of "
                  f"{', '.join(written.suites())}" + (", tolerance rules kept" if previous and previous.rules else ""))
            return 0
        baseline = gates.read_baseline(args.baseline)
        for note in gates.environment_notes(baseline, measured):
            print(f"note: {note}", file=sys.stderr)
        for suite, n in measured.unfinished.items():
            print(f"note: {suite}: {n} run(s) or evaluation(s) not finished; their numbers count as missing",
                  file=sys.stderr)
        verdicts = gates.compare(baseline, measured, suites=suites, extra_rules=rules)
        print(f"results {args.results}/ against {args.baseline}:")
        print(gates.render(verdicts, show_all=args.all))
        failed |= any(v.failed for v in verdicts)
    if args.benchmarks is not None:
        ratios = gates.check_ratios(gates.read_gates(args.ratios), gates.read_benchmarks(args.benchmarks))
        print(f"\nbenchmarks {args.benchmarks} against {args.ratios}:")
        print(gates.render_ratios(ratios))
        failed |= any(v.failed for v in ratios)
    if failed:
        print("check failed: see the lines in capitals above. If a change is meant to move the numbers, refresh "
              "the baseline with --update (README: Regression gate)", file=sys.stderr)
    return 1 if failed else 0


def _cmd_list(args: argparse.Namespace) -> int:
    from tekapbench.data import DATASETS
    from tekapbench.data.views import VIEWS
    from tekapbench.engine.optim import OPTIMIZERS, SCHEDULES
    from tekapbench.evaluations import EVALUATIONS
    from tekapbench.execution import EXECUTORS
    from tekapbench.methods import METHODS
    from tekapbench.methods.base import TEACHER_TOPOLOGIES
    from tekapbench.plots import PLOTS
    from tekapbench.models import MODELS, create_model
    from tekapbench.tables import FORMATS, LAYOUTS

    def about(kind: str, name: str) -> str:
        if kind == "models":
            params = sum(p.numel() for p in create_model(name, 100).parameters())
            return f"{params / 1e6:6.2f}M parameters at 100 classes"
        entry = registries[kind].get(name)
        text = getattr(entry, "description", "") or (getattr(entry, "__doc__", "") or "").strip().split("\n")[0]
        if kind == "methods" and entry.teachers != "one":  # whom it learns from, when not just the teacher
            text += f" [teachers: {TEACHER_TOPOLOGIES[entry.teachers]}]"
        if kind == "methods" and entry.recipes:  # trains on its official recipe there, not the dataset's
            text += f" [own recipe: {', '.join(entry.recipes)}]"
        return text

    registries = {"models": MODELS, "datasets": DATASETS, "methods": METHODS, "evaluations": EVALUATIONS,
                  "layouts": LAYOUTS, "formats": FORMATS, "plots": PLOTS, "executors": EXECUTORS,
                  "optimizers": OPTIMIZERS, "schedules": SCHEDULES, "views": VIEWS}
    for kind in [args.kind] if args.kind else registries:
        print(f"{kind}:")
        for name in registries[kind].names():
            print(f"  {name:16} {about(kind, name)}".rstrip())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tekapbench", description=__doc__.strip())
    parser.add_argument("--version", action="version", version=f"tekapbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train and score every run of a suite (skips finished runs)")
    run.add_argument("suite", type=Path, help="suite file (TOML), e.g. suites/smoke.toml")
    run.add_argument("--dry-run", action="store_true", help="validate and list the runs; train nothing")
    run.add_argument("--force", action="store_true", help="run finished runs again, into new records")
    run.add_argument("--results", default="results", help="results folder (default: results)")
    run.add_argument("--device", default="auto", help="auto (default: cuda when available), cpu, cuda, cuda:1, ...")
    run.add_argument("--threads", type=int, help="torch threads on a CPU (default: the suite's cpu_threads, else "
                                                 "one per core); recorded with every result")
    run.add_argument("--quiet", action="store_true", help="no progress and no table")
    run.add_argument("--executor", default="local",
                     help="local (default: this machine, one worker per visible GPU) or slurm (submitit)")
    run.add_argument("--workers", type=int, help="local: worker processes (default: one per visible GPU, else 1)")
    run.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                     help="slurm: override the suite's [slurm] settings, e.g. partition=gpu time_min=600 "
                          "gpus_per_task=1 'sbatch={account=\"lab\"}' (repeatable)")
    run.add_argument("--detach", action="store_true", help="slurm: return once submitted (see `tekapbench status`)")
    run.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # a local executor's worker
    run.add_argument("--force-before", help=argparse.SUPPRESS)  # the moment --force means, shared with workers
    run.set_defaults(func=_cmd_run)

    def results_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("--results", default="results", help="results folder (default: results)")
        command.add_argument("--suite", help="only this suite (default: every suite with results)")

    table = sub.add_parser("table", help="print paper-style tables of the results")
    results_options(table)
    table.add_argument("--format", default="github", help="github (default), markdown, latex, csv, json")
    table.add_argument("--layout", help="override the layout named by the suite")
    table.add_argument("--compare", choices=["paper"],
                       help="paper: published numbers (results/paper/published.csv) and the difference beside ours")
    table.add_argument("--delta", metavar="ROW", help="add, after each column, the difference to this row (e.g. KD)")
    table.add_argument("--paper", default="results/paper", help="folder of published.csv (default: results/paper)")
    table.add_argument("--metric", choices=["last", "best"], default="last",
                       help="last-epoch (default, as CRD/TeKAP report) or best-epoch test accuracy")
    table.set_defaults(func=_cmd_table)

    plot = sub.add_parser("plot", help="plot training curves, robustness vs eps, per-class accuracy (PNG and PDF)")
    results_options(plot)
    plot.add_argument("--kind", action="append", help="curves, robustness, long_tail (default: all); repeatable")
    plot.add_argument("--out", help="folder for the files (default: results/<suite>/plots)")
    plot.set_defaults(func=_cmd_plot)

    check = sub.add_parser("check", help="regression gate: results against a baseline, benchmark ratios against "
                                         "bounds; exit 1 on a regression")
    check.add_argument("results", nargs="?", default="results", help="results folder (default: results)")
    check.add_argument("--baseline", type=Path, help="baseline file (JSON), or a folder of them, one per CPU type "
                                                     "(results/baselines/cpu/): the file of this machine's CPU")
    check.add_argument("--suite", help="only this suite (default: every suite of the baseline)")
    check.add_argument("--tolerance", action="append", default=[], metavar="METRIC=DROP",
                       help="tolerated drop, tried before the baseline's rules: top1=0.5, 'adversarial:*=2std', "
                            "top1=0.5,2std (repeatable)")
    check.add_argument("--update", action="store_true",
                       help="write the baseline from the results instead (keeps its tolerance rules, and with "
                            "--suite its other suites)")
    check.add_argument("--all", action="store_true", help="list every metric, not only those that need attention")
    check.add_argument("--benchmarks", type=Path, help="a pytest --benchmark-json file to gate on speed ratios")
    check.add_argument("--ratios", type=Path, default=Path("results/baselines/speed.toml"),
                       help="the speed ratios and their bounds (default: results/baselines/speed.toml)")
    check.set_defaults(func=_cmd_check)

    status = sub.add_parser("status", help="each run of a suite: done, running, pending, failed or skipped")
    status.add_argument("suite", help="suite file (TOML) or the name of a suite with results")
    status.add_argument("--results", default="results", help="results folder (default: results)")
    status.set_defaults(func=_cmd_status)

    listing = sub.add_parser("list", help="list what is registered: models, datasets, methods, evaluations, ...")
    listing.add_argument("kind", nargs="?",
                         choices=["models", "datasets", "methods", "evaluations", "layouts", "formats", "plots",
                                  "executors"])
    listing.set_defaults(func=_cmd_list)
    return parser


def _raise_interrupted(signum, frame):
    raise Interrupted(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM (Slurm preemption, scancel, kill) stops like Ctrl-C: claims are released, checkpoints kept
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_interrupted) if in_main_thread else None
    try:
        return args.func(args)
    except UnknownNameError as exc:
        print(f"tekapbench {args.command}: {exc}", file=sys.stderr)
        return 2
    except TekapbenchError as exc:
        print(f"tekapbench {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0
    except OSError as exc:  # a read-only or full results folder, a path that is a file, ...
        print(f"tekapbench {args.command}: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Interrupted) as exc:
        print("\ninterrupted: finished runs are saved; run the same command again to resume", file=sys.stderr)
        return 143 if isinstance(exc, Interrupted) else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
