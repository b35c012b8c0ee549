"""The command line: bad input of every kind exits 2 with one line naming it; list, report, help.

One table holds malformed specs and malformed calls alike. Each case must fail before any trial
starts, with ``blip-ray: error: <the problem>`` on stderr and no traceback.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from blip_ray.cli import main
from blip_ray.errors import UserError
from blip_ray.experiments.run.storage import _check_same_spec
from blip_ray.experiments.specs.experiment import SpecError, load_spec
from blip_ray.records.layout import SPEC_RECORD

GOOD = """\
name: t
benchmark: pdigits
methods: {blip: {f_prior: 1e-15}, finetune: {}}
seeds: [0]
"""
RL_GOOD = "name: r\nbenchmark: cartpole3\nmethods: {blip: {}, finetune: {}}\nseeds: [0]\n"
#: Supervised-only keys, each with a value that would be valid on a supervised benchmark.
SUPERVISED_ONLY = {
    "network": "mlp",
    "width": 2,
    "fc_width": 64,
    "train": "{lr: 0.1}",
    "data_dir": "data",
    "download": "false",
    "device": "cpu",
}


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
    in_spec: bool = True
    """``load_spec`` itself refuses it (False: the run does, still before any trial starts)."""


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
    "inject_failure beyond the tasks": Case(
        "inject_failure.after_task: the run has tasks 0 to 4, got 5",
        spec=GOOD + "tasks: 5\ninject_failure: {after_task: 5}\n",
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
    "unknown method": Case("unknown method 'gem'", spec=GOOD.replace("finetune", "gem")),
    # experiment trackers
    "unknown logger": Case(
        "loggers: unknown 'neptune'; known: tensorboard, mlflow, wandb",
        spec=GOOD + "loggers: [neptune]\n",
    ),
    "loggers not a list": Case("loggers: expected a list", spec=GOOD + "loggers: mlflow\n"),
    "unknown --logger": Case(
        "loggers: unknown 'comet'", flags=("--logger", "comet"), in_spec=False
    ),
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
        "train.lr: must be > 0, got -1.0", spec=GOOD + "train: {lr: {grid: [0.1, -1]}}\n"
    ),
    "negative batch": Case(
        "train.batch_size: must be > 0", spec=GOOD + "train: {batch_size: -8}\n"
    ),
    "zero tasks": Case("tasks: must be >= 1", spec=GOOD + "tasks: 0\n"),
    "zero samples": Case("samples: must be >= 1", spec=GOOD + "samples: 0\n"),
    "negative retries": Case("max_failures: must be >= 0", spec=GOOD + "max_failures: -1\n"),
    "zero cpus": Case("resources.cpu: must be > 0", spec=GOOD + "resources: {cpu: 0}\n"),
    # duplicate keys, which YAML alone would resolve silently to the last one
    "a method twice": Case(
        "invalid YAML at line 5: duplicate key 'blip' (first at line 4); keep one of them",
        spec="name: t\nbenchmark: pdigits\nmethods:\n  blip: {}\n  blip: {f_prior: 1e-12}\n"
        "seeds: [0]\n",
    ),
    "two names": Case(
        "invalid YAML at line 5: duplicate key 'name' (first at line 1)", spec=GOOD + "name: u\n"
    ),
    # what a trial would fail on: the network, the tasks, the name
    "an image network on flat inputs": Case(
        "network: alexnet32 needs a channels-first image shape (C, H, W), got (784,) from "
        "mnist5; use mlp",
        spec=GOOD.replace("pdigits", "mnist5") + "network: alexnet32\n",
    ),
    "the Atari trunk on digits": Case(
        "network: atari_cnn needs a channels-first image shape (C, H, W), got (64,) from "
        "pdigits; use mlp",
        spec=GOOD + "network: atari_cnn\n",
    ),
    "fc_width without a rule": Case(
        "fc_width: alexnet84 has no fc_width rule; leave fc_width unset",
        spec=GOOD.replace("pdigits", "miniimagenet") + "fc_width: 100\n",
    ),
    "more tasks than the sequence": Case(
        "tasks: pdigits has 10 tasks; use 1 to 10, got 50", spec=GOOD + "tasks: 50\n"
    ),
    "more tasks than an RL sequence": Case(
        "tasks: cartpole3 has 3 tasks; use 1 to 3, got 4", spec=RL_GOOD + "tasks: 4\n"
    ),
    "name too long for a file": Case(
        "name: 300 characters is too long for a directory name; use at most 200",
        spec=GOOD.replace("name: t", "name: " + "a" * 300),
    ),
    # hyperparameter values, checked by the method's own config (every searched value)
    "negative F_prior": Case(
        "methods.blip.f_prior: must be a finite number > 0, got -1e-15",
        spec=GOOD.replace("1e-15", "-1e-15"),
    ),
    "zero F_prior": Case(
        "methods.blip.f_prior: must be a finite number > 0, got 0.0",
        spec=GOOD.replace("1e-15", "0"),
    ),
    "too many bits": Case(
        "methods.blip.max_bit: must be in 1..30, got 40",
        spec=GOOD.replace("f_prior: 1e-15", "max_bit: 40"),
    ),
    "a bad value in a grid": Case(
        "methods.blip.f_prior: must be a finite number > 0, got -1e-15",
        spec=GOOD.replace("1e-15", "{grid: [1e-15, -1e-15]}"),
    ),
    "a bad end of a range": Case(
        "methods.blip.f_prior: must be a finite number > 0, got -1e-15",
        spec=GOOD.replace("1e-15", "{uniform: [-1e-15, 1e-15]}"),
    ),
    "a range over an integer": Case(
        "methods.blip.max_bit: uniform needs a real-valued setting",
        spec=GOOD.replace("f_prior: 1e-15", "max_bit: {uniform: [1, 20]}"),
    ),
    "unknown zero-bit rule": Case(
        "methods.blip.zero_bit_weights: expected one of zero, keep, reinit, got 'random'",
        spec=GOOD.replace("f_prior: 1e-15", "zero_bit_weights: random"),
    ),
    "unknown zero-bit rule in a grid on RL": Case(
        "methods.blip.zero_bit_weights.grid[1]: expected one of zero, keep, reinit, got 'none'",
        spec=RL_GOOD.replace("blip: {}", "blip: {zero_bit_weights: {grid: [keep, none]}}"),
    ),
    "zero F_prior on RL": Case(
        "methods.blip.f_prior: must be a finite number > 0, got 0.0",
        spec=RL_GOOD.replace("blip: {}", "blip: {f_prior: 0}"),
    ),
    # methods and keys of the other track
    "a supervised-only method on RL": Case(
        "methods.ewc: does not run on RL benchmarks; cartpole3 accepts blip, finetune, frozen",
        spec=RL_GOOD.replace("finetune", "ewc"),
    ),
    **{
        f"the supervised-only {name} on RL": Case(
            f"methods.{name}: does not run on RL benchmarks; cartpole3 accepts blip, finetune, "
            "frozen, hat, mas, online_ewc, packnet, si",
            spec=RL_GOOD.replace("finetune", name),
        )
        for name in ("agem", "er", "joint", "ucl")
    },
    "hat on resnet18": Case(
        "methods.hat: resnet18 has skip connections, and HAT's gates pair each layer with the one "
        "before it; use mlp, alexnet32 or alexnet84",
        spec="name: t\nbenchmark: cifar\nnetwork: resnet18\nmethods: {hat: {}}\nseeds: [0]\n",
    ),
    "the old RL name ft_fix": Case(
        "methods: unknown method 'ft_fix'", spec=RL_GOOD.replace("finetune", "ft_fix")
    ),
    **{
        f"{key} on an RL benchmark": Case(
            f"{key}: does nothing on the RL benchmark cartpole3", spec=RL_GOOD + f"{key}: {value}\n"
        )
        for key, value in SUPERVISED_ONLY.items()
    },
    # the RL budget and PPO
    "less than one PPO batch": Case(
        "rl.steps_per_task: 1000 is below one PPO batch of 1024 env steps (ppo num_envs x "
        "rollout_length); use at least 1024",
        spec=RL_GOOD + "rl: {steps_per_task: 1000}\n",
    ),
    "envs that do not split over the runners": Case(
        "rl.num_env_runners: 8 envs (ppo.num_envs) do not split over 3 env runners",
        spec=RL_GOOD + "rl: {num_env_runners: 3}\n",
    ),
    "minibatches that do not divide the batch": Case(
        "rl.ppo.num_minibatches: 3 minibatches do not divide the batch of 1024 env steps",
        spec=RL_GOOD + "rl: {ppo: {num_minibatches: 3}}\n",
    ),
    "a negative PPO setting": Case(
        "rl.ppo.lr: must be > 0, got -0.1", spec=RL_GOOD + "rl: {ppo: {lr: -0.1}}\n"
    ),
    # files and storage
    "missing data_dir": Case(
        "MNIST",
        spec=GOOD.replace("pdigits", "mnist5") + "data_dir: {tmp}/nodata\ndownload: false\n",
        in_spec=False,
    ),
    "spec is a directory": Case("is a directory", spec=None),
    "unwritable storage": Case(
        "is not writable", flags=("--storage", "{tmp}/spec.yaml/runs"), in_spec=False
    ),
    "storage URI": Case(
        "URIs are not supported", flags=("--storage", "s3://bucket/runs"), in_spec=False
    ),
    # flags, alone and together
    "unknown flag": Case("unrecognized arguments: --bogus", flags=("--bogus",), in_spec=False),
    "name with a path": Case(
        "--name: use letters", flags=("--name", "../elsewhere"), in_spec=False
    ),
    "name clash": Case(
        "already exists; add --resume",
        flags=("--name", "e"),
        setup=_existing_experiment,
        in_spec=False,
    ),
    "nothing to resume": Case("nothing to resume", flags=("--resume",), in_spec=False),
    "resume a full run with --smoke": Case(
        "--resume: e started with tasks=10, this spec has tasks=2",
        flags=("--resume", "--smoke", "--name", "e"),
        setup=_experiment_started_without_smoke,
        in_spec=False,
    ),
    # the cluster
    "unreachable address": Case(
        "cannot reach the Ray cluster at 127.0.0.1:{port}",
        flags=("--address", "127.0.0.1:{port}"),
        in_spec=False,
    ),
    "dashboard address": Case(
        "that is the dashboard (job) address",
        flags=("--address", "http://127.0.0.1:8265"),
        in_spec=False,
    ),
    "address without port": Case(
        "expected host:port", flags=("--address", "headnode"), in_spec=False
    ),
    "more CPUs than the cluster": Case(
        "a trial asks for 64 CPU but the cluster has 2",
        spec=GOOD + "resources: {cpu: 64}\n",
        ray=True,
        in_spec=False,
    ),
    "a GPU on a CPU cluster": Case(
        "a trial asks for 1 GPU but the cluster has 0",
        spec=GOOD + "resources: {gpu: 1}\n",
        ray=True,
        in_spec=False,
    ),
}


@contextlib.contextmanager
def _time_limit(*, seconds: float) -> Iterator[None]:
    """Interrupt the block with TimeoutError once ``seconds`` have passed (main thread only)."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


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
    with _time_limit(seconds=15):  # an unreachable address fails fast, too
        code = _exit_code(["run", str(spec), "--storage", str(runs), *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert case.message.replace("{port}", str(port)) in err, err
    assert len(err.splitlines()) == 1 and err.startswith("blip-ray: error: "), err
    if case.in_spec:  # refused while the spec is read, so the run never reaches Ray
        with pytest.raises(SpecError) as refused:
            load_spec(spec)
        assert err == f"blip-ray: error: {refused.value}"


def test_resume_accepts_new_reference_returns_but_not_a_new_budget(tmp_path):
    (tmp_path / "e").mkdir()
    spec = tmp_path / "r.yaml"
    spec.write_text(RL_GOOD + "rl: {steps_per_task: 1024}\n")
    (tmp_path / "e" / SPEC_RECORD).write_text(json.dumps(load_spec(spec).record()))
    spec.write_text(RL_GOOD + "rl: {steps_per_task: 1024, reference_returns: {cartpole-0: 500}}\n")
    _check_same_spec(load_spec(spec), tmp_path / "e")  # references only rescale the report
    spec.write_text(RL_GOOD + "rl: {steps_per_task: 2048}\n")
    with pytest.raises(
        UserError,
        match="started with rl.steps_per_task=1024, this spec has rl.steps_per_task=2048;",
    ):
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
    lines = capsys.readouterr().out.splitlines()
    assert "  pdigits       10 tasks of 64, network mlp" in lines
    assert "  miniimagenet  20 tasks of 3x84x84, network alexnet84" in lines
    subset = lines.index("  pmnist5k      10 tasks of 784, network mlp")
    note = lines[subset + 1]
    assert "5,000-image MNIST subset" in note and "not the paper's" in note
    assert "  cartpole3      3 tasks, trunk mlp" in lines
    assert "networks: alexnet32, alexnet84, atari_cnn, mlp, resnet18" in lines
    blip = lines.index(
        "  blip        supervised, rl: f_prior=1e-15, max_bit=20, fisher_batches=80, "
        "fisher_batch_size=100, zero_bit_weights='zero'"
    )
    assert lines[blip + 2].strip() == (
        "on cartpole3: f_prior=5e-18, fisher_batches=32, fisher_batch_size=62"
    )
    assert "  ewc         supervised: lamb=5000.0, fisher_batch_size=20" in lines
    assert "  frozen      supervised, rl: freeze_after=1" in lines
    assert "  agem        supervised: per_class=13, memory_batch=256" in lines
    assert "  si          supervised, rl: c=0.1, xi=0.001" in lines
    assert "  joint       supervised (a reference, not a continual method): none" in lines


def test_list_shows_every_key_a_spec_can_set_with_its_default(capsys):
    import dataclasses

    from blip_ray.experiments.specs.experiment import TOP_KEYS
    from blip_ray.rl.settings import PpoSettings, RlSettings
    from blip_ray.supervised import TrainSettings

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    section = {name: out.split(f"\n{name}:")[1].split("\n")[1:4] for name in ("train", "rl.ppo")}
    train = " ".join(section["train"])
    assert all(f"{f.name}={f.default!r}" in train for f in dataclasses.fields(TrainSettings)[:-1])
    ppo = " ".join(section["rl.ppo"])
    assert all(f"{f.name}={f.default!r}" in ppo for f in dataclasses.fields(PpoSettings))
    assert "steps_per_task: atari6 10,000,000, cartpole3 49,152" in out
    for field in dataclasses.fields(RlSettings):
        assert f"{field.name}" in out.split("\nrl:")[1]
    keys = out.split("spec keys")[1].split("\ntrain:")[0]
    assert all(key in keys for key in TOP_KEYS)
    assert "resources={cpu: 1.0, gpu: 0.0}" in keys
    assert "RL benchmarks (one task alone: <benchmark>:<task>, e.g. cartpole3:cartpole-0):" in out
    assert "SpaceInvaders, Breakout, Asterix, Freeway" in out  # minatar4's tasks


def test_report_of_a_directory_without_trials_is_a_user_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "holds no trials" in capsys.readouterr().err


def test_help_names_the_commands_and_exit_codes(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    out = textwrap.dedent(capsys.readouterr().out)
    assert "run" in out and "report" in out and "130 interrupted" in out
