"""The ``blip-ray`` command line: ``run``, ``report``, ``compare`` and ``list``.

Exit codes: 0 ok, 1 some trials failed, 2 user error (bad spec, flags, paths), 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import NoReturn

from blip_ray import __version__
from blip_ray.experiments.plan.grid import (
    MAX_TRIALS_ENV,
    MAX_TRIALS_WITHOUT_YES,
    PROGRESS_EVERY_S,
    check_trial_count,
    max_trials,
    stage_plans,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``blip-ray: error: <problem> (see blip-ray run --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"blip-ray: error: {message} (see {self.prog} --help)\n")


_PLUGIN_FLAG = ("--plugin",)
_PLUGIN_HELP = {
    "action": "append",
    "default": [],
    "metavar": "MODULE_OR_FILE",
    "help": "import a module (mypkg.methods) or file (./my_bench.py) that registers methods, "
    "benchmarks or networks, here and in every Ray worker; repeatable; adds to the spec's plugins",
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="blip-ray",
        description="Continual-learning benchmarks built around BLIP, scheduled by Ray Tune.",
        epilog="Exit codes: 0 ok, 1 some trials failed, 2 user error, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"blip-ray {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run an experiment spec (YAML) and write its report",
        description="Run every trial (method x hyperparameters x seed) of a spec with Ray Tune. "
        "Each trial reports and checkpoints after every task; the report (summary.csv, "
        "matrices.csv, table.csv, table.tex, improvement.csv, report.md, plots) is written into "
        "the experiment directory.",
    )
    run.add_argument("spec", help="experiment spec, e.g. benchmarks/pdigits.yaml")
    run.add_argument(*_PLUGIN_FLAG, **_PLUGIN_HELP)
    run.add_argument(
        "--logger",
        action="append",
        default=[],
        metavar="NAME",
        help="also log every finished task to this experiment tracker: tensorboard (the "
        "default), mlflow or wandb; repeatable; adds to the spec's loggers",
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue the latest interrupted experiment of this spec "
        "(finished trials and tasks are not redone)",
    )
    run.add_argument(
        "--address",
        help="Ray cluster address (default: RAY_ADDRESS, else an "
        "embedded local instance sized to this machine)",
    )
    run.add_argument(
        "--storage", help="directory for experiments (default: the spec's storage, 'runs/')"
    )
    run.add_argument(
        "--data-dir",
        help="directory with the benchmark's data files (overrides the spec's data_dir)",
    )
    run.add_argument("--name", help="experiment directory name (default: <spec name>-<time>)")
    run.add_argument(
        "--smoke",
        action="store_true",
        help="shrink the spec to seconds: one seed, two tasks, one epoch",
    )
    run.add_argument(
        "--references",
        action="store_true",
        help="RL: instead of the methods, train PPO on each task alone for every seed (the "
        "single-task references); writes reference_returns.yaml for report --reference-returns",
    )
    run.add_argument(
        "--quiet",
        action="store_true",
        help="instead of Tune's trial table, one overall progress line at most every "
        f"{PROGRESS_EVERY_S:g} s; the per-task lines and the final table",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="list the trials (the grid, resources, how many at once) with an estimated wall "
        "time, and start nothing",
    )
    run.add_argument(
        "--yes",
        action="store_true",
        help=f"run a spec of more than --max-trials trials (default {MAX_TRIALS_WITHOUT_YES}, "
        f"or {MAX_TRIALS_ENV})",
    )
    run.add_argument(
        "--max-trials",
        type=_count,
        metavar="N",
        help=f"most trials a spec may make without --yes (default: {MAX_TRIALS_ENV}, else "
        f"{MAX_TRIALS_WITHOUT_YES})",
    )
    run.add_argument(
        "--cpus",
        type=float,
        metavar="N",
        help="--dry-run: the cluster's CPUs, to count the trials at once (default: this "
        "machine's; Ray is not started to ask)",
    )

    report = commands.add_parser(
        "report",
        help="(re)write the report of an experiment directory, or pool several into one",
        description="Rewrite an experiment's report (summary.csv, matrices.csv, table.csv, "
        "table.tex, improvement.csv, report.md, plots) in its directory, or into --out. Several "
        "directories of one benchmark and the same settings (methods and seeds may differ) pool "
        "their trials into one report in --out.",
    )
    report.add_argument("run_dirs", nargs="+", metavar="DIR", help="experiment directories")
    report.add_argument(
        "--out", metavar="DIR", help="write the report here (needed to pool several)"
    )
    _reference_returns_flag(report)

    compare = commands.add_parser(
        "compare",
        help="print the results tables of several experiments side by side",
        description="One results table over several experiment directories, a Run column "
        "first; notes name the settings they differ in. Writes no file.",
    )
    compare.add_argument("run_dirs", nargs="+", metavar="DIR", help="experiment directories")
    _reference_returns_flag(compare)

    listing = commands.add_parser(
        "list",
        help="everything a spec can name: benchmarks, networks, methods and their "
        "hyperparameters, the spec's keys, train: and rl: settings with their defaults",
    )
    listing.add_argument(*_PLUGIN_FLAG, **_PLUGIN_HELP)
    return parser


def _reference_returns_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reference-returns",
        metavar="FILE",
        help="RL: YAML mapping of task name to a single-task reference return (1 of the "
        "per-game normalization); replaces the spec's rl.reference_returns",
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    handlers = {"run": _run, "report": _report, "compare": _compare, "list": _list}
    # SIGTERM (kill, `ray job stop`) stops like Ctrl+C; run_experiment keeps this true inside Ray.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print("interrupted: the experiment can be continued with --resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ValueError as err:  # SpecError and UserError are ValueErrors with a one-line message
        print(f"blip-ray: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace) -> int:
    from blip_ray.experiments.specs.experiment import load_spec

    # every spec mistake (plugins included) stops the run here, before Ray is imported
    spec = load_spec(args.spec, plugins=args.plugin, loggers=args.logger)
    if args.data_dir:
        spec = dataclasses.replace(spec, data_dir=args.data_dir)
    if args.smoke:
        spec = spec.smoke()
    if args.references:
        spec = spec.as_references()
    remote = bool(args.address or os.environ.get("RAY_ADDRESS"))
    if args.dry_run:
        from blip_ray.experiments.plan.dry_run import dry_run_text

        print(dry_run_text(spec, cpus=args.cpus, remote=remote))
        return EXIT_OK
    if not args.resume:  # a resumed run was confirmed when it started
        for plan in stage_plans(spec):
            check_trial_count(plan, limit=max_trials(args.max_trials), confirmed=args.yes)
    if not remote:
        # An embedded instance is one machine: keep it on loopback (Ray would advertise the
        # interface address). Ray reads this when imported, so it is set before the import.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    from blip_ray.experiments.run.launch import run_experiment
    from blip_ray.experiments.run.protocol import run_protocol

    outcome = (run_protocol if spec.search is not None else run_experiment)(
        spec,
        address=args.address,
        resume=args.resume,
        storage=args.storage,
        name=args.name,
        verbose=0 if args.quiet else 1,
        flags={"smoke": args.smoke, "references": args.references, "data_dir": args.data_dir},
    )
    print(f"\n{outcome.table}\n")
    print(
        f"report: {outcome.experiment_dir / 'report.md'}  ({outcome.trials} trials, "
        f"{outcome.failed} not ok, {outcome.wall_s:.0f} s)"
    )
    if outcome.interrupted:
        print(f"interrupted; continue with: {_resume_command(args, outcome.experiment_dir)}")
        return EXIT_INTERRUPTED
    return EXIT_FAILED if outcome.failed else EXIT_OK


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number of trials, got {text!r}")
    return int(text)


def _resume_command(args: argparse.Namespace, experiment_dir: Path) -> str:
    words = ["blip-ray", "run", args.spec, "--resume", "--name", experiment_dir.name]
    words += ["--storage", str(experiment_dir.parent)]
    words += [word for plugin in args.plugin for word in ("--plugin", plugin)]
    words += [word for logger in args.logger for word in ("--logger", logger)]
    words += ["--smoke"] * args.smoke + ["--references"] * args.references
    words += ["--data-dir", args.data_dir] * bool(args.data_dir)
    words += ["--address", args.address] * bool(args.address)
    return shlex.join(words)


def _report(args: argparse.Namespace) -> int:
    from blip_ray.report.runs import report_experiments

    trials, table = report_experiments(
        [Path(d) for d in args.run_dirs],
        out=Path(args.out) if args.out else None,
        reference_returns=_reference_returns(args),
    )
    print(table)
    return EXIT_FAILED if any(t.status != "ok" for t in trials) else EXIT_OK


def _compare(args: argparse.Namespace) -> int:
    from blip_ray.report.runs import compare_table

    runs = [Path(d) for d in args.run_dirs]
    print(compare_table(runs, reference_returns=_reference_returns(args)))
    return EXIT_OK


def _reference_returns(args: argparse.Namespace) -> dict[str, float] | None:
    from blip_ray.experiments.specs.tracks import load_reference_returns

    return load_reference_returns(args.reference_returns) if args.reference_returns else None


def _list(args: argparse.Namespace) -> int:
    from blip_ray.experiments.specs.listing import listing_lines
    from blip_ray.plugins import load_plugins

    load_plugins(args.plugin)
    print("\n".join(listing_lines()))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
