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
    from tekapbench.progress import Progress, configure_logging
    from tekapbench.suite.plan import plan_suite

    from tekapbench.suite.schema import MAX_THREADS

    import logging

    configure_logging(logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO)

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
    if args.tracker:  # over the suite's [tracking] trackers; `--tracker none`: no tracker
        from tekapbench.trackers import TRACKERS

        plan.trackers = [name for name in args.tracker if name != "none"]
        for name in plan.trackers:
            TRACKERS.get(name)
    if plan.trackers:
        from tekapbench.trackers import check_trackers

        check_trackers(plan.trackers)  # a chosen tracker that is not installed: an error before anything runs
    slurm = {**plan.slurm, **_key_values(args.slurm, "--slurm")}
    if args.executor == "slurm":
        _check_slurm_settings(slurm)
    device = pick_device(args.device)
    if args.dry_run:
        runner = SuiteRunner(plan, results_root=args.results, device=device, force=args.force, threads=args.threads,
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
                     force_before=args.force_before, cohorts=args.cohorts))
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
                                                   layout=args.layout, delta=args.delta, ci=args.ci)
              for t in suite_tables]
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


def _cmd_report(args: argparse.Namespace) -> int:
    from tekapbench.report import write_report

    suite = args.suite
    if suite.endswith(".toml") or Path(suite).is_file():  # a suite file, as `status` takes: its name
        from tekapbench.suite.plan import plan_suite

        suite = plan_suite(suite).name
    print(write_report(Path(args.results), suite, out=Path(args.out) if args.out else None, metric=args.metric))
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from tekapbench.errors import UsageError

    if args.positional:  # the results folder was a positional argument once; one spelling now, as elsewhere
        raise UsageError(f"unexpected argument {' '.join(args.positional)!r}: give the results folder as "
                         f"--results {args.positional[0]} (as for table, plot and status)")
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
    from tekapbench.trackers import TRACKERS

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
                  "optimizers": OPTIMIZERS, "schedules": SCHEDULES, "views": VIEWS, "trackers": TRACKERS}
    assert list(registries) == list(LIST_KINDS), "keep LIST_KINDS (the choices of `list`) in step"
    for kind in [args.kind] if args.kind else registries:
        print(f"{kind}:")
        registry = registries[kind]
        for name in registry.names():
            origin = registry.origin(name)
            print(f"  {name:16} {about(kind, name)}".rstrip() + ("" if origin == "tekapbench" else f"  [{origin}]"))
        for pattern in registry.namespaces():
            print(f"  {pattern:16} any name of {registry.origin(pattern.replace('<name>', ''))}")
    return 0


LIST_KINDS = ("models", "datasets", "methods", "evaluations", "layouts", "formats", "plots", "executors",
              "optimizers", "schedules", "views", "trackers")

# Descriptions and examples of `tekapbench COMMAND --help` (argparse keeps their line breaks).
MAIN_EPILOG = """\
commands:
  run      train and score every run of a suite
  status   where each run of a suite stands
  table    paper-style tables of the results
  plot     figures of the results (PNG and PDF)
  check    regression gate: results against a baseline, benchmark ratios against bounds
  report   one self-contained HTML page of a suite: tables, plots, each run's settings and provenance
  list     what is registered: models, datasets, methods, evaluations, layouts, ...

examples:
  tekapbench run suites/smoke.toml        # CPU, offline: teacher, student, KD, KD+TeKAP (L) on digits
  tekapbench table --suite smoke          # its table again
  tekapbench COMMAND --help               # a command's options and examples
"""

RUN_DESCRIPTION = """\
Train and score every run of a suite (a TOML file): teachers first, then the students that learn from
them, then the suite's evaluations. A run that has a record is skipped; an unfinished one resumes from
its last epoch checkpoint. The suite is validated before anything trains. At the end the suite's table
is printed (as `tekapbench table --suite NAME`)."""

RUN_EPILOG = """\
examples:
  tekapbench run suites/smoke.toml                   # CPU, offline, about two minutes on 2 cores
  tekapbench run suites/diverse.toml --dry-run       # validate and list the runs; trains nothing
  tekapbench run suites/diverse.toml --workers 3     # three local worker processes
  tekapbench run suites/diverse.toml --device cuda:1
  tekapbench run suites/smoke.toml --force --quiet   # train finished runs again, into new attempts
  tekapbench run suites/smoke.toml --tracker tensorboard --tracker mlflow   # instead of [tracking] trackers
  tekapbench run suites/diverse.toml --executor slurm --slurm partition=gpu --slurm time_min=720
  tekapbench run suites/diverse.toml --executor slurm --detach   # submit and return; see `status`

exit status: 0 every run done; 1 a run failed or was skipped (the others still ran; running again
retries them); 2 a bad suite, command line or missing dataset (nothing trained); 130 Ctrl-C, 143
SIGTERM (finished runs are kept: run the same command again to resume).
"""

STATUS_DESCRIPTION = """\
Where each run of a suite stands: done (with its top-1), running (host, pid, Slurm job; epoch k/N,
its last test top-1 and the time left, from the run's history.jsonl), pending (its Slurm queue state;
whether it resumes from a checkpoint, and from which epoch), failed (the error, or the log of a
Slurm job that ended without a record) or skipped (the run it needed). Reads the results folder, and
squeue for submitted runs; starts nothing."""

STATUS_EPILOG = """\
examples:
  tekapbench status suites/diverse.toml              # by suite file
  tekapbench status smoke                            # by name: a suite that has results
  tekapbench status diverse --results /scratch/me/results
"""

TABLE_DESCRIPTION = """\
Print paper-style tables of the results: each suite in its own layout(s) (`[suite] layout`), or in the
one given by --layout. Cells are mean ± sample std over seeds (with n where seeds differ); the best
method of each column is bold (the teacher row is a reference, not ranked). Students of one seed share
their initialisation and data order, so rows are compared seed by seed: a Δ cell is the mean paired
difference with its 95 % confidence interval (t-distribution, n-1 degrees of freedom), and the sota
layout's ✓ (TeKAP improves its base, the row named by `baseline` in the suite) is given only when that
interval lies above 0; the notes say how many seeds an unresolved difference would need. Reads only the
results folder."""

TABLE_EPILOG = """\
examples:
  tekapbench table                                   # every suite under results/, GitHub markdown
  tekapbench table --suite smoke --format latex      # booktabs LaTeX; also markdown, csv, json, html
  tekapbench table --layout robustness               # another layout than the suite's own
  tekapbench table --delta KD                        # each row's paired difference to the KD row, 95% CI
  tekapbench table --suite sota --no-ci              # marks on the mean, no intervals
  tekapbench table --suite robustness --layout calibration   # ECE and NLL; also fidelity, corruptions
  tekapbench table --compare paper                   # published numbers (results/paper/) and Δ beside ours
  tekapbench table --metric best                     # best-epoch instead of last-epoch accuracy
  tekapbench table --results /scratch/me/results --format csv > results.csv

layouts and formats: `tekapbench list layouts`, `tekapbench list formats`.
"""

PLOT_DESCRIPTION = """\
Plot the results of each suite, as PNG and PDF files: training curves, robustness against eps,
per-class accuracy against class size, and what else is registered (`tekapbench list plots`). A plot
is made where its data exists (training histories, stored evaluations); the files' paths are printed."""

PLOT_EPILOG = """\
examples:
  tekapbench plot                                    # every plot of every suite, into results/<suite>/plots/
  tekapbench plot --suite robustness_cpu --kind robustness
  tekapbench plot --kind curves --kind long_tail --out figures/

plots: `tekapbench list plots`.
"""

REPORT_DESCRIPTION = """\
Write one self-contained HTML page of a suite's results, to open offline or send to a colleague: the
suite's tables in each of its layouts, its plots (embedded as PNG data), and for every run its label,
id, status, resolved spec and recipe, metrics, per-epoch history, evaluations, provenance (git commit,
package versions, device, wall time) and links to its files (record.json, model.pt, ...). The page
loads nothing else (inline CSS, no script); the links to the run files are relative to the page, so
they work while it sits beside the results folder. Reads only the results folder; the page's path is
printed."""

REPORT_EPILOG = """\
examples:
  tekapbench report smoke                            # results/smoke/report.html
  tekapbench report suites/diverse.toml              # by suite file, as for status
  tekapbench report sota --metric best --out sota.html
  tekapbench report robustness_cpu --results /scratch/me/results
"""

CHECK_DESCRIPTION = """\
Regression gate for CI. With --baseline: every group (suite · dataset · teacher → student · row) and
metric of the results (top-1, top-5, each stored evaluation's headline scores) against a committed
baseline, within a tolerance (default: 1 point or 2 seed stds; rules in the baseline file or
--tolerance). A folder of baselines holds one per CPU type (results/baselines/cpu/<cpu>.json): the file
of this machine's CPU is read. With --benchmarks: speed ratios of a pytest-benchmark run against their
bounds (results/baselines/speed.toml)."""

CHECK_EPILOG = """\
examples:
  tekapbench check --baseline results/baselines/cpu                    # results/ against this CPU type's baseline
  tekapbench check --baseline results/baselines/cpu --all              # every metric, not only what needs attention
  tekapbench check --results ci-results --baseline results/baselines/cpu --suite smoke
  tekapbench check --baseline results/baselines/cpu --tolerance top1=0.5 --tolerance 'adversarial:*=2std'
  tekapbench check --baseline results/baselines/cpu --update           # write this CPU type's baseline from results/
  tekapbench check --benchmarks bench.json                             # speed ratios of a benchmark run

exit status: 0 pass; 1 a regression beyond tolerance, or a group, metric or seed of the baseline the
results lack, or a ratio out of bounds (listed in capitals); 2 bad input (no baseline for this CPU
type, an unreadable file, nothing to check).
"""

LIST_DESCRIPTION = """\
List what is registered, one line each: models (with parameter counts at 100 classes), datasets,
methods (whom they learn from, where they train on their own recipe), evaluations, table layouts and
formats, plots, executors, optimizers, lr schedules and augmentation views. Names are what suites and
options accept."""

LIST_EPILOG = """\
examples:
  tekapbench list                                    # everything
  tekapbench list methods
  tekapbench list layouts                            # for `[suite] layout` and `table --layout`
"""


def _command(sub, name: str, help: str, description: str, epilog: str) -> argparse.ArgumentParser:
    command = sub.add_parser(name, help=help, description=description, epilog=epilog,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    _plugin_option(command, "plugins")
    return command


def _plugin_option(parser: argparse.ArgumentParser, dest: str) -> None:
    parser.add_argument("--plugin", action="append", default=[], dest=dest, metavar="MODULE_OR_FILE",
                        help="import a plugin first: a module (my_kd.methods) or a .py file that registers methods, "
                             "models, datasets, evaluations, layouts or plots (repeatable); installed plugins "
                             "(entry points 'tekapbench.plugins') are always loaded")


def load_plugins(args: argparse.Namespace) -> list[str]:
    """Installed plugins (entry points), then those of --plugin; returns the --plugin ones as resolved paths
    or module names, for the worker processes and Slurm jobs that must load them too."""
    from tekapbench.plugins import load_entry_points, load_plugin

    load_entry_points()
    given = [*args.plugins_before, *getattr(args, "plugins", [])]
    resolved = [str(Path(p).resolve()) if p.endswith(".py") or "/" in p else p for p in given]
    for spec in resolved:
        load_plugin(spec, "--plugin")
    return resolved


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tekapbench", description=__doc__.strip(), epilog=MAIN_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"tekapbench {__version__}")
    _plugin_option(parser, "plugins_before")
    sub = parser.add_subparsers(dest="command", required=True)

    run = _command(sub, "run", "train and score every run of a suite (skips finished runs)", RUN_DESCRIPTION,
                   RUN_EPILOG)
    run.add_argument("suite", type=Path, help="suite file (TOML), e.g. suites/smoke.toml")
    run.add_argument("--dry-run", action="store_true", help="validate and list the runs; train nothing")
    run.add_argument("--force", action="store_true", help="run finished runs again, into new records")
    run.add_argument("--results", default="results", help="results folder (default: results)")
    run.add_argument("--device", default="auto", help="auto (default: cuda when available), cpu, cuda, cuda:1, ...")
    run.add_argument("--threads", type=int, help="torch threads on a CPU (default: the suite's cpu_threads, else "
                                                 "one per core); recorded with every result")
    loudness = run.add_mutually_exclusive_group()
    loudness.add_argument("--quiet", "-q", action="store_true", help="no progress and no table: warnings only")
    loudness.add_argument("--verbose", "-v", action="store_true", help="debug messages too")
    run.add_argument("--executor", default="local",
                     help="local (default: this machine, one worker per visible GPU) or slurm (submitit)")
    run.add_argument("--tracker", action="append", default=[], metavar="NAME",
                     help="feed this tracker instead of the suite's [tracking] trackers: tensorboard, wandb, mlflow "
                          "(`tekapbench list trackers`); repeatable; --tracker none for none")
    run.add_argument("--workers", type=int, help="local: worker processes (default: one per visible GPU, else 1)")
    run.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                     help="slurm: override the suite's [slurm] settings, e.g. partition=gpu time_min=600 "
                          "gpus_per_task=1 'sbatch={account=\"lab\"}' (repeatable)")
    run.add_argument("--detach", action="store_true", help="slurm: return once submitted (see `tekapbench status`)")
    run.add_argument("--no-cohorts", dest="cohorts", action="store_false",
                     help="train every run alone; by default students that share teachers, dataset, seed and "
                          "epochs train as one cohort, one teacher forward per batch for all (same records)")
    run.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # a local executor's worker
    run.add_argument("--force-before", help=argparse.SUPPRESS)  # the moment --force means, shared with workers
    run.set_defaults(func=_cmd_run)

    def results_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("--results", default="results", help="results folder (default: results)")
        command.add_argument("--suite", help="only this suite (default: every suite with results)")

    table = _command(sub, "table", "print paper-style tables of the results", TABLE_DESCRIPTION, TABLE_EPILOG)
    results_options(table)
    table.add_argument("--format", default="github", help="github (default), markdown, latex, csv, json, html")
    table.add_argument("--layout", help="override the layout named by the suite (`tekapbench list layouts`)")
    table.add_argument("--compare", choices=["paper"],
                       help="paper: published numbers (results/paper/published.csv) and the difference beside ours")
    table.add_argument("--delta", metavar="ROW", help="add, after each column, each row's paired difference to this "
                                                      "row over seeds (e.g. KD)")
    table.add_argument("--ci", action=argparse.BooleanOptionalAction, default=True,
                       help="paired differences with 95%% t-intervals over seeds, ✓ only where the interval excludes "
                            "0, and the seeds a difference would need (default); --no-ci: mean ± std, ✓ on the mean")
    table.add_argument("--paper", default="results/paper", help="folder of published.csv (default: results/paper)")
    table.add_argument("--metric", choices=["last", "best"], default="last",
                       help="last-epoch (default, as CRD/TeKAP report) or best-epoch test accuracy")
    table.set_defaults(func=_cmd_table)

    plot = _command(sub, "plot", "plot training curves, robustness vs eps, per-class accuracy, ... (PNG and PDF)",
                    PLOT_DESCRIPTION, PLOT_EPILOG)
    results_options(plot)
    plot.add_argument("--kind", action="append",
                      help="a registered plot, e.g. curves (default: all; `tekapbench list plots`); repeatable")
    plot.add_argument("--out", help="folder for the files (default: results/<suite>/plots)")
    plot.set_defaults(func=_cmd_plot)

    report = _command(sub, "report", "one self-contained HTML page of a suite's results (tables, plots, runs)",
                      REPORT_DESCRIPTION, REPORT_EPILOG)
    report.add_argument("suite", help="the name of a suite with results, or its suite file (TOML)")
    report.add_argument("--results", default="results", help="results folder (default: results)")
    report.add_argument("--out", help="the page to write (default: results/<suite>/report.html)")
    report.add_argument("--metric", choices=["last", "best"], default="last",
                        help="last-epoch (default) or best-epoch test accuracy in the tables")
    report.set_defaults(func=_cmd_report)

    check = _command(sub, "check", "regression gate: results against a baseline, benchmark ratios against "
                                   "bounds; exit 1 on a regression", CHECK_DESCRIPTION, CHECK_EPILOG)
    check.add_argument("--results", default="results", help="results folder (default: results)")
    check.add_argument("positional", nargs="*", help=argparse.SUPPRESS)  # a clear error: the folder is --results
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

    status = _command(sub, "status", "each run of a suite: done, running, pending, failed or skipped",
                      STATUS_DESCRIPTION, STATUS_EPILOG)
    status.add_argument("suite", help="suite file (TOML) or the name of a suite with results")
    status.add_argument("--results", default="results", help="results folder (default: results)")
    status.set_defaults(func=_cmd_status)

    listing = _command(sub, "list", "list what is registered: models, datasets, methods, evaluations, ...",
                       LIST_DESCRIPTION, LIST_EPILOG)
    listing.add_argument("kind", nargs="?", choices=LIST_KINDS, help="only this kind (default: all)")
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
        args.plugin_specs = load_plugins(args)
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
