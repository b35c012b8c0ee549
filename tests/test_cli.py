"""The command line: malformed specs and flags fail with exit 2 and one line; list and report."""

from __future__ import annotations

import textwrap

import pytest

from blip_ray.cli import main

GOOD = """\
name: t
benchmark: pdigits
methods: {blip: {f_prior: 1e-15}, finetune: {}}
seeds: [0]
"""

BAD_SPECS = [
    ("name: [unclosed", "invalid YAML"),
    ("- a\n- b\n", "expected a mapping"),
    (GOOD + "colour: red\n", "unknown key 'colour'"),
    (GOOD.replace("benchmark: pdigits", "benchmark: imagenet21k"), "unknown 'imagenet21k'"),
    (GOOD.replace("finetune: {}", "hat: {}"), "unknown method 'hat'"),
    (GOOD.replace("f_prior: 1e-15", "fprior: 1e-15"), "methods.blip: unknown key 'fprior'"),
    (GOOD.replace("f_prior: 1e-15", "f_prior: lots"), "methods.blip.f_prior: expected a"),
    (GOOD.replace("seeds: [0]", "seeds: []"), "seeds: expected a non-empty list"),
    (GOOD.replace("seeds: [0]", "seeds: [0, -1]"), "seeds[1]: must be >= 0"),
    (GOOD + "train: {epochs: 0}\n", "train.epochs: must be > 0"),
    (GOOD + "train: {lr: -1}\n", "train.lr: must be > 0"),
    (GOOD + "train: {learning_rate: 0.1}\n", "train: unknown key 'learning_rate'"),
    (GOOD + "device: tpu\n", "device: expected cpu, cuda or auto"),
    (GOOD + "resources: {cpu: 0}\n", "resources.cpu: must be > 0"),
    (GOOD + "network: vgg\n", "network: unknown 'vgg'"),
    (GOOD.replace("f_prior: 1e-15", "f_prior: {loguniform: [0, 1]}"), "loguniform"),
    (GOOD.replace("f_prior: 1e-15", "f_prior: {sweep: [1, 2]}"), "a searched value is one of"),
    (GOOD.replace("name: t", "name: 'a b/c'"), "name: use letters"),
    ("benchmark: pdigits\nmethods: {finetune: {}}\nseeds: [0]\n", "missing required key 'name'"),
]


@pytest.mark.parametrize(("text", "message"), BAD_SPECS)
def test_malformed_specs_exit_2_with_one_line(text, message, tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    assert main(["run", str(spec), "--storage", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_missing_spec_file_and_nothing_to_resume_exit_2(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    spec = tmp_path / "spec.yaml"
    spec.write_text(GOOD)
    assert main(["run", str(spec), "--resume", "--storage", str(tmp_path / "runs")]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_missing_data_dir_is_a_user_error(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(GOOD.replace("pdigits", "mnist5") + f"data_dir: {tmp_path / 'nodata'}\n"
                    "download: false\n")
    assert main(["run", str(spec), "--storage", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "MNIST" in err and "nodata" in err and len(err.strip().splitlines()) == 1


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
