"""The command line: bad input of every kind exits 2 with one line naming it; list, report, help.

One table holds malformed specs and malformed calls alike. Each case must fail before any trial
starts, with ``blip-ray: error: <the problem>`` on stderr and no traceback.
"""

from __future__ import annotations

import json
import socket
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from blip_ray.cli import main
from blip_ray.experiments.spec import load_spec
from blip_ray.experiments.storage import SPEC_RECORD, UserError, _check_same_spec

GOOD = """\
name: t
benchmark: pdigits
methods: {blip: {f_prior: 1e-15}, finetune: {}}
seeds: [0]
"""
RL_GOOD = "name: r\nbenchmark: cartpole3\nmethods: {blip: {}, finetune: {}}\nseeds: [0]\n"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket closes


def _existing_experiment(runs: Path) -> None:
    (runs / "e").mkdir(parents=True)


def _experiment_started_without_smoke(runs: Path) -> None:
    """A resumable experiment (Tune's tuner.pkl) whose saved spec is the full GOOD spec."""
    _existing_experiment(runs)
    (runs / "e" / "tuner.pkl").write_bytes(b"")
    (runs / "full.yaml").write_text(GOOD)
    record = load_spec(runs / "full.yaml").record()
    (runs / "e" / SPEC_RECORD).write_text(json.dumps(record))


@dataclass(frozen=True)
class Case:
    message: str
    """What the one error line must contain."""
    spec: str | bytes | None = GOOD
    """The spec file's content; None passes a directory instead of a file."""
    flags: tuple[str, ...] = ()
    """Extra command-line words; ``{tmp}`` and ``{port}`` are filled in."""
    setup: object = None
    """Called with the storage directory before the run."""
    ray: bool = False
    """Needs a running Ray instance (the check compares against the cluster's resources)."""


CASES = {
    # YAML and structure
    "invalid YAML": Case("invalid YAML", spec="name: [unclosed"),
    "not a mapping": Case("expected a mapping", spec="- a\n- b\n"),
    "not UTF-8": Case("not a UTF-8 text file", spec=b"name: \xff\xfe\n"),
    "python tag refused": Case("invalid YAML", spec="!!python/object/apply:os.system [echo]\n"),
    "missing name": Case(
        "missing required key 'name'", spec="benchmark: pdigits\nmethods: {finetune: {}}\n"
    ),
    # an unknown key at each level
    "unknown top key": Case("spec: unknown key 'colour'", spec=GOOD + "colour: red\n"),
    "unknown method key": Case(
        "methods.blip: unknown key 'fprior'", spec=GOOD.replace("f_prior", "fprior")
    ),
    "unknown train key": Case(
        "train: unknown key 'learning_rate'", spec=GOOD + "train: {learning_rate: 0.1}\n"
    ),
    "unknown resources key": Case(
        "resources: unknown key 'tpu'", spec=GOOD + "resources: {tpu: 1}\n"
    ),
    "unknown inject_failure key": Case(
        "inject_failure: unknown key 'after'", spec=GOOD + "inject_failure: {after: 1}\n"
    ),
    "unknown search kind": Case(
        "a searched value is one of", spec=GOOD.replace("1e-15", "{sweep: [1, 2]}")
    ),
    # wrong types and values
    "word for a number": Case(
        "methods.blip.f_prior: expected a", spec=GOOD.replace("1e-15", "lots")
    ),
    "NaN hyperparameter": Case("expected a finite number", spec=GOOD.replace("1e-15", ".nan")),
    "seeds not a list": Case("seeds: expected a non-empty list", spec=GOOD.replace("[0]", "0")),
    "fractional width": Case("fc_width: expected an integer", spec=GOOD + "fc_width: 1.5\n"),
    "string for a boolean": Case("download: expected true or false", spec=GOOD + "download: 'y'\n"),
    "methods a list": Case(
        "methods: expected a mapping",
        spec="name: t\nbenchmark: pdigits\nmethods: [blip]\nseeds: [0]\n",
    ),
    "bad name": Case("name: use letters", spec=GOOD.replace("name: t", "name: 'a b/c'")),
    "unknown benchmark": Case("unknown 'imagenet21k'", spec=GOOD.replace("pdigits", "imagenet21k")),
    "unknown method": Case("unknown method 'hat'", spec=GOOD.replace("finetune", "hat")),
    # the RL section
    "rl on a supervised benchmark": Case("rl: only RL benchmarks", spec=GOOD + "rl: {}\n"),
    "unknown rl key": Case("rl: unknown key 'episodes'", spec=RL_GOOD + "rl: {episodes: 3}\n"),
    "zero steps per task": Case(
        "rl.steps_per_task: must be >= 1", spec=RL_GOOD + "rl: {steps_per_task: 0}\n"
    ),
    "reference for an unknown task": Case(
        "rl.reference_returns: unknown task 'Pong'; cartpole3's tasks are cartpole-0",
        spec=RL_GOOD + "rl: {reference_returns: {Pong: 21}}\n",
    ),
    "reference not a number": Case(
        "rl.reference_returns.cartpole-1: expected a finite number",
        spec=RL_GOOD + "rl: {reference_returns: {cartpole-1: high}}\n",
    ),
    "unknown network": Case("network: unknown 'vgg'", spec=GOOD + "network: vgg\n"),
    "unknown device": Case("device: expected cpu, cuda or auto", spec=GOOD + "device: tpu\n"),
    "bad loguniform": Case("loguniform", spec=GOOD.replace("1e-15", "{loguniform: [0, 1]}")),
    "uniform over an integer": Case(
        "train.epochs: uniform needs a real-valued setting",
        spec=GOOD + "train: {epochs: {uniform: [1, 5]}}\n",
    ),
    # zero or negative budgets, empty seeds
    "empty seeds": Case("seeds: expected a non-empty list", spec=GOOD.replace("[0]", "[]")),
    "negative seed": Case("seeds[1]: must be >= 0", spec=GOOD.replace("[0]", "[0, -1]")),
    "zero epochs": Case("train.epochs: must be > 0", spec=GOOD + "train: {epochs: 0}\n"),
    "negative lr": Case("train.lr: must be > 0", spec=GOOD + "train: {lr: -1}\n"),
    "negative lr in a grid": Case(
        "train.lr.grid[1]: must be > 0", spec=GOOD + "train: {lr: {grid: [0.1, -1]}}\n"
    ),
    "negative batch": Case(
        "train.batch_size: must be > 0", spec=GOOD + "train: {batch_size: -8}\n"
    ),
    "zero tasks": Case("tasks: must be >= 1", spec=GOOD + "tasks: 0\n"),
    "zero samples": Case("samples: must be >= 1", spec=GOOD + "samples: 0\n"),
    "negative retries": Case("max_failures: must be >= 0", spec=GOOD + "max_failures: -1\n"),
    "zero cpus": Case("resources.cpu: must be > 0", spec=GOOD + "resources: {cpu: 0}\n"),
    # files and storage
    "missing data_dir": Case(
        "MNIST",
        spec=GOOD.replace("pdigits", "mnist5") + "data_dir: {tmp}/nodata\ndownload: false\n",
    ),
    "spec is a directory": Case("is a directory", spec=None),
    "unwritable storage": Case("is not writable", flags=("--storage", "{tmp}/spec.yaml/runs")),
    "storage URI": Case("URIs are not supported", flags=("--storage", "s3://bucket/runs")),
    # flags, alone and together
    "unknown flag": Case("unrecognized arguments: --bogus", flags=("--bogus",)),
    "name with a path": Case("--name: use letters", flags=("--name", "../elsewhere")),
    "name clash": Case(
        "already exists; add --resume", flags=("--name", "e"), setup=_existing_experiment
    ),
    "nothing to resume": Case("nothing to resume", flags=("--resume",)),
    "resume a full run with --smoke": Case(
        "--resume: e started with tasks=null, this spec has tasks=2",
        flags=("--resume", "--smoke", "--name", "e"),
        setup=_experiment_started_without_smoke,
    ),
    # the cluster
    "unreachable address": Case(
        "cannot reach the Ray cluster at 127.0.0.1:{port}", flags=("--address", "127.0.0.1:{port}")
    ),
    "dashboard address": Case(
        "that is the dashboard (job) address", flags=("--address", "http://127.0.0.1:8265")
    ),
    "address without port": Case("expected host:port", flags=("--address", "headnode")),
    "more CPUs than the cluster": Case(
        "a trial asks for 64 CPU but the cluster has 2",
        spec=GOOD + "resources: {cpu: 64}\n",
        ray=True,
    ),
    "a GPU on a CPU cluster": Case(
        "a trial asks for 1 GPU but the cluster has 0",
        spec=GOOD + "resources: {gpu: 1}\n",
        ray=True,
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_input_exits_2_with_one_line(case, tmp_path, request, capsys):
    if case.ray:
        request.getfixturevalue("ray_session")
        capsys.readouterr()  # Ray's own start-up notice, if the instance started just now
    spec, runs = tmp_path / "spec.yaml", tmp_path / "runs"
    if case.spec is None:
        spec = tmp_path
    elif isinstance(case.spec, bytes):
        spec.write_bytes(case.spec)
    else:
        spec.write_text(case.spec.replace("{tmp}", str(tmp_path)))
    if case.setup is not None:
        case.setup(runs)
    port = _closed_port()
    flags = [f.replace("{tmp}", str(tmp_path)).replace("{port}", str(port)) for f in case.flags]
    started = time.monotonic()
    code = _exit_code(["run", str(spec), "--storage", str(runs), *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert case.message.replace("{port}", str(port)) in err, err
    assert len(err.splitlines()) == 1 and err.startswith("blip-ray: error: "), err
    assert time.monotonic() - started < 15  # an unreachable address fails fast, too


def test_resume_accepts_new_reference_returns_but_not_a_new_budget(tmp_path):
    (tmp_path / "e").mkdir()
    spec = tmp_path / "r.yaml"
    spec.write_text(RL_GOOD + "rl: {steps_per_task: 1000}\n")
    (tmp_path / "e" / SPEC_RECORD).write_text(json.dumps(load_spec(spec).record()))
    spec.write_text(RL_GOOD + "rl: {steps_per_task: 1000, reference_returns: {cartpole-0: 500}}\n")
    _check_same_spec(load_spec(spec), tmp_path / "e")  # references only rescale the report
    spec.write_text(RL_GOOD + "rl: {steps_per_task: 2000}\n")
    with pytest.raises(UserError, match="started with rl="):
        _check_same_spec(load_spec(spec), tmp_path / "e")


def test_the_table_covers_at_least_25_cases():
    assert len(CASES) >= 25


def test_yaml_tags_never_run_code(tmp_path, capsys):
    marker = tmp_path / "pwned"
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"!!python/object/apply:os.system ['touch {marker}']\n")
    assert _exit_code(["run", str(spec), "--storage", str(tmp_path)]) == 2
    assert not marker.exists()


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as stop:  # argparse errors
        return int(stop.code)


def test_list_shows_benchmarks_methods_and_defaults(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "pdigits" in out and "miniimagenet" in out and "resnet18" in out
    assert "f_prior=1e-15" in out and "lamb=5000.0" in out


def test_report_of_a_directory_without_trials_is_a_user_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "holds no trials" in capsys.readouterr().err


def test_help_names_the_commands_and_exit_codes(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    out = textwrap.dedent(capsys.readouterr().out)
    assert "run" in out and "report" in out and "130 interrupted" in out
