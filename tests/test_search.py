"""The selection protocol: ``search:`` in the spec, the search stage's configurations, the choice on
validation scores, and both stages run and resumed through the harness."""

from __future__ import annotations

import copy
import json

import pytest

from blip_ray.api import load_model, open_experiment
from blip_ray.errors import UserError
from blip_ray.experiments.plan.dry_run import dry_run_text
from blip_ray.experiments.plan.estimate import Estimate
from blip_ray.experiments.plan.grid import plan_trials, stage_plans
from blip_ray.experiments.plan.stages import configurations, final_stage, search_stage
from blip_ray.experiments.specs.checks import SpecError
from blip_ray.experiments.specs.experiment import parse_spec
from blip_ray.records.layout import FINAL_STAGE, SEARCH_STAGE, SELECTION_FILE, read_provenance
from blip_ray.records.trials import TrialResult, load_trials, task_rows
from blip_ray.report.selection import select, selection_markdown, selection_record

SPEC = {
    "name": "searched",
    "benchmark": "pdigits",
    "fc_width": 32,
    "tasks": 3,
    "train": {"lr": {"loguniform": [0.01, 0.3]}, "epochs": 1},
    "methods": {
        "blip": {"f_prior": {"loguniform": [1e-17, 1e-13]}, "fisher_batches": 2},
        "ewc": {"lamb": {"grid": [10.0, 100.0]}},
        "finetune": {},
    },
    "seeds": [0, 1],
    "search": {"budget": 3, "seeds": [100, 101], "protocol": "first_tasks", "first_tasks": 2},
}


def spec_with(**search):
    raw = copy.deepcopy(SPEC)
    raw["search"] |= search
    return raw


def test_the_search_section_is_read_with_its_defaults():
    search = parse_spec(SPEC).search
    assert (search.algorithm, search.budget, search.metric, search.mode) == (
        "random",
        3,
        "acc",
        "max",
    )
    assert search.seeds == (100, 101) and search.search_tasks(3) == 2
    assert parse_spec(spec_with(metric="forgetting")).search.mode == "min"
    without = copy.deepcopy(SPEC)
    del without["search"]
    assert parse_spec(without).search is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seeds": [1, 100]}, "search.seeds: seed 1 is also a final seed"),
        ({"seeds": []}, "search.seeds: expected a non-empty list"),
        ({"budget": 0}, "search.budget: must be >= 1"),
        ({"algorithm": "bayes"}, "search.algorithm: expected one of grid, random, optuna"),
        ({"metric": "fwt"}, "search.metric: expected one of acc, bwt, bwt_gem, forgetting"),
        ({"first_tasks": 4}, "search.first_tasks: the run has 3 tasks, got 4"),
        ({"first_tasks": 1, "metric": "bwt"}, "search.first_tasks: bwt needs at least 2 tasks"),
        ({"protocol": "full"}, "search.first_tasks: only protocol first_tasks reads it"),
        ({"algorithm": "grid"}, "methods.blip.f_prior: a grid search cannot draw"),
        ({"bogus": 1}, "search: unknown key 'bogus'"),
    ],
)
def test_a_wrong_search_section_is_refused_with_one_line(change, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(")) as err:
        parse_spec(spec_with(**change))
    assert "\n" not in str(err.value)


def test_a_grid_search_larger_than_the_budget_is_refused():
    raw = spec_with(algorithm="grid", budget=2)
    raw["train"] = {"lr": 0.1, "epochs": 1}
    raw["methods"] = {"ewc": {"lamb": {"grid": [1.0, 10.0, 100.0]}}}
    with pytest.raises(SpecError, match="methods.ewc: its grid holds 3 configurations, above"):
        parse_spec(raw)
    raw["search"]["budget"] = 3
    assert configurations(parse_spec(raw)) == {
        "ewc": ({"lamb": 1.0}, {"lamb": 10.0}, {"lamb": 100.0})
    }


def test_samples_and_references_do_not_mix_with_a_search():
    with pytest.raises(SpecError, match="samples: a spec with search:"):
        parse_spec(SPEC | {"samples": 2})
    with pytest.raises(SpecError, match="--references: .* it has no search"):
        parse_spec(SPEC).as_references()


def test_every_method_gets_the_budget_and_the_draws_are_reproducible():
    spec = parse_spec(SPEC)
    drawn = configurations(spec)
    assert drawn == configurations(parse_spec(SPEC))  # same spec, same configurations
    assert [len(drawn[m]) for m in ("blip", "ewc", "finetune")] == [3, 3, 3]
    for configuration in drawn["blip"]:
        assert configuration["fisher_batches"] == 2  # fixed values ride along
        assert 1e-17 <= configuration["f_prior"] <= 1e-13
        assert 0.01 <= configuration["train.lr"] <= 0.3
    assert len({c["train.lr"] for c in drawn["blip"]}) == 3
    # one method's draws do not depend on the others listed
    alone = copy.deepcopy(SPEC)
    alone["methods"] = {"blip": SPEC["methods"]["blip"]}
    assert configurations(parse_spec(alone))["blip"] == drawn["blip"]
    # a method with nothing searched runs once; a finite space below the budget runs whole
    fixed = copy.deepcopy(SPEC)
    fixed["train"] = {"lr": 0.1, "epochs": 1}
    fixed_drawn = configurations(parse_spec(fixed))
    assert fixed_drawn["finetune"] == ({},)
    assert fixed_drawn["ewc"] == ({"lamb": 10.0}, {"lamb": 100.0})
    assert [m.settings for m in plan_trials(search_stage(parse_spec(fixed))).methods] == [3, 2, 1]


def test_the_stages_use_disjoint_seeds_and_the_protocols_tasks():
    spec = parse_spec(SPEC)
    search = search_stage(spec)
    final = final_stage(spec, {"blip": {"f_prior": 1e-15}, "ewc": {"lamb": 10.0}, "finetune": {}})
    assert search.seeds == (100, 101) and final.seeds == (0, 1)
    assert not set(search.seeds) & set(final.seeds)
    assert (search.tasks, final.tasks) == (2, 3)
    assert final.configurations["ewc"] == ({"lamb": 10.0},)
    assert [p.trials for p in stage_plans(spec)] == [9 * 2, 3 * 2]
    with pytest.raises(ValueError, match="no chosen configuration for finetune"):
        final_stage(spec, {"blip": {}, "ewc": {}})


def test_the_dry_run_shows_both_stages():
    text = dry_run_text(
        parse_spec(SPEC), cpus=2, estimator=lambda spec, at_once: Estimate(60.0, "fake")
    )
    assert "random search, 3 configurations per method on validation acc (max)" in text
    assert "search stage:\n  searched-search (pdigits): 18 trials" in text
    assert "final stage:\n  searched-final (pdigits): 6 trials" in text
    assert "both stages: 24 trials; estimated wall time about 2m 00s" in text


def trial(method, seed, hp, valid, test, status="ok"):
    return TrialResult(
        trial_id=f"{method}-{seed}-{hp}",
        method=method,
        seed=seed,
        hyperparameters=hp,
        status=status,
        task_names=["a", "b"],
        matrix=test,
        valid_matrix=valid,
    )


GOOD, BAD = [[0.9, 0.5], [0.9, 0.9]], [[0.6, 0.5], [0.6, 0.6]]


def test_selection_follows_validation_even_where_test_disagrees():
    trials = [
        # lamb 1: best on validation, worst on test
        trial("ewc", 100, {"lamb": 1.0}, valid=GOOD, test=BAD),
        trial("ewc", 101, {"lamb": 1.0}, valid=GOOD, test=BAD),
        trial("ewc", 100, {"lamb": 2.0}, valid=BAD, test=GOOD),
        trial("ewc", 101, {"lamb": 2.0}, valid=BAD, test=GOOD),
    ]
    chosen = select(trials, metric="acc", higher_is_better=True, seeds=[100, 101])["ewc"].chosen
    assert chosen.configuration == {"lamb": 1.0} and chosen.score == pytest.approx(0.9)
    # lower is better for forgetting: the other way round
    low = select(trials, metric="forgetting", higher_is_better=False, seeds=[100, 101])
    assert low["ewc"].chosen.configuration == {"lamb": 1.0}  # GOOD forgets 0.0, BAD 0.0: a tie
    worse = [t for t in trials if t.hyperparameters == {"lamb": 2.0}]
    for t in worse:
        t.valid_matrix = [[0.9, 0.5], [0.9, 0.5]]  # no forgetting of task a, b learned less
    forgot = [trial("ewc", s, {"lamb": 3.0}, [[0.9, 0.5], [0.5, 0.9]], GOOD) for s in (100, 101)]
    ranked = select(trials + forgot, metric="forgetting", higher_is_better=False, seeds=[100, 101])
    assert [s.rank for s in ranked["ewc"].scored] == [1, 2, 3]


def test_a_configuration_missing_a_seed_cannot_be_chosen():
    trials = [
        trial("ewc", 100, {"lamb": 1.0}, valid=GOOD, test=GOOD),  # 101 failed: incomplete
        trial("ewc", 101, {"lamb": 1.0}, valid=None, test=[], status="failed"),
        trial("ewc", 100, {"lamb": 2.0}, valid=BAD, test=BAD),
        trial("ewc", 101, {"lamb": 2.0}, valid=BAD, test=BAD),
    ]
    selection = select(trials, metric="acc", higher_is_better=True, seeds=[100, 101])["ewc"]
    assert selection.chosen.configuration == {"lamb": 2.0}
    assert [s.rank for s in selection.scored] == [None, 1]
    with pytest.raises(UserError, match="no configuration of ewc finished on every search seed"):
        select(trials[:2], metric="acc", higher_is_better=True, seeds=[100, 101])


def test_the_selection_record_and_tables():
    trials = [
        trial("ewc", s, {"lamb": lamb, "x": 1}, valid=v, test=GOOD)
        for s in (100, 101)
        for lamb, v in ((1.0, BAD), (2.0, GOOD))
    ]
    settings = {
        "algorithm": "random",
        "budget": 2,
        "metric": "acc",
        "mode": "max",
        "tasks_searched": 2,
        "tasks": 2,
        "search_seeds": [100, 101],
        "final_seeds": [0],
    }
    record = selection_record(
        select(trials, metric="acc", higher_is_better=True, seeds=[100, 101]), settings
    )
    assert record["methods"]["ewc"]["chosen"] == {"lamb": 2.0, "x": 1}
    assert record["methods"]["ewc"]["configurations"] == 2
    json.dumps(record)  # plain JSON
    text = selection_markdown(record)
    assert "| ewc | 2 | lamb=2.0 | 0.900 |" in text  # the varied key only
    assert "| ewc | 1 | lamb=2.0 | 0.900 | 0.900, 0.900 |" in text
    assert "| ewc | 2 | lamb=1.0 | 0.600 | 0.600, 0.600 |" in text


@pytest.mark.ray
def test_both_stages_run_and_resume(ray_session, tmp_path):
    """A failure in each stage: resuming continues that stage and never reruns a finished one."""
    from blip_ray.experiments.run.protocol import run_protocol

    raw = spec_with(budget=2)
    raw |= {"tasks": 2, "max_failures": 0, "inject_failure": {"after_task": 0}}
    raw["search"] |= {"protocol": "full"}
    del raw["search"]["first_tasks"]
    spec = parse_spec(raw)
    with pytest.raises(UserError, match="no configuration of blip finished on every search seed"):
        run_protocol(spec, storage=str(tmp_path), name="p", verbose=0)
    top = tmp_path / "p"
    assert not (top / SELECTION_FILE).exists() and not (top / FINAL_STAGE).exists()

    first = run_protocol(spec, storage=str(tmp_path), resume=True, verbose=0)
    assert first.experiment_dir == top
    searched = load_trials(top / SEARCH_STAGE)
    assert (
        len(searched) == 3 * 2 * 2
    )  # 3 methods x budget 2 x 2 seeds and all(t.status == "ok" for t in searched)
    assert {t.seed for t in searched} == {100, 101}
    final = load_trials(top / FINAL_STAGE)
    assert len(final) == 3 * 2 and all(t.status == "failed" for t in final)
    search_rows = task_rows(top / SEARCH_STAGE)

    resumed = run_protocol(spec, storage=str(tmp_path), resume=True, verbose=0)
    assert resumed.failed == 0
    assert task_rows(top / SEARCH_STAGE) == search_rows  # the search did not run again
    for trial_id, tasks in task_rows(top / FINAL_STAGE).items():
        assert tasks == [0, 1], f"{trial_id} redid a task: {tasks}"
    record = json.loads((top / SELECTION_FILE).read_text())
    final = load_trials(top / FINAL_STAGE)
    assert {t.seed for t in final} == {0, 1}
    for t in final:  # each method's chosen configuration, training setting included
        assert t.hyperparameters == record["methods"][t.method]["chosen"]
        assert "train.lr" in t.hyperparameters
    for method, entry in record["methods"].items():
        best = max(s["score"] for s in entry["tried"] if s["complete"])
        assert entry["score"] == best, method
    segment = read_provenance(top / FINAL_STAGE)["segments"][-1]
    assert segment["selection"]["methods"] == record["methods"]
    report = (top / "report.md").read_text()
    assert "## Selection (validation)" in report and "## Search trials" in report
    final_report = (top / FINAL_STAGE / "report.md").read_text()
    statistics = final_report[final_report.index("## Statistics") :].split("\n## ")[0]
    assert statistics.strip() in report  # the final stage's statistics, at the top
    assert final_report.split("## Results\n\n")[1].split("\n\n")[0] in report  # its table
    assert (top / "table.csv").exists()

    opened = open_experiment(top)  # the API opens the final stage, with the selection
    assert opened.selection == record and len(opened.summary) == 3 * 2
    assert load_model(top, method="finetune", seed=1, hyperparameters=None) is not None

    # a spec naming this selection runs the final stage alone, with the same configurations
    raw["search"]["selection"] = str(top / SELECTION_FILE)
    again = run_protocol(parse_spec(raw), storage=str(tmp_path), name="again", verbose=0)
    assert again.trials == 3 * 2 and not (tmp_path / "again" / SEARCH_STAGE).exists()
    for t in load_trials(tmp_path / "again" / FINAL_STAGE):
        assert t.hyperparameters == record["methods"][t.method]["chosen"]
    assert "This run took the selection from" in (tmp_path / "again" / "report.md").read_text()


def optuna_spec(**search):
    raw = spec_with(algorithm="optuna", **search)
    raw["methods"] = {"blip": raw["methods"]["blip"], "finetune": {}}
    return parse_spec(raw)


def finished(trial_config, value):
    """A search trial's last result whose validation matrix scores ``value`` (ACC)."""
    return {"num_tasks": 2, "tasks_done": 2, "valid_matrix": [[value, 0.0], [value, value]]}


def test_the_optuna_search_runs_each_configuration_on_every_seed_within_the_budget(tmp_path):
    from blip_ray.experiments.run.searchers import MethodSearch, method_search

    spec = search_stage(optuna_spec())
    searcher = method_search(spec, {"shared": True})
    handed, scores = [], {}
    for n in range(100):
        config = searcher.suggest(f"t{n}")
        if config is MethodSearch.FINISHED:
            break
        if config is None:  # waiting for scores: finish the oldest running trial
            trial_id = next(iter(scores))
            searcher.on_trial_complete(trial_id, finished(None, scores.pop(trial_id)))
            continue
        assert config["run"] == {"shared": True}
        method = config["method"]
        handed.append((method["name"], json.dumps([method["hp"], method["train"]]), method["seed"]))
        scores[f"t{n}"] = 0.5
        if len(scores) > 3:
            trial_id = next(iter(scores))
            searcher.on_trial_complete(trial_id, finished(None, scores.pop(trial_id)))
    else:
        pytest.fail("the search never finished")
    for trial_id, value in scores.items():
        searcher.on_trial_complete(trial_id, finished(None, value))
    # budget 3 each (finetune searches train.lr), every configuration on both search seeds
    per_method = {m: {c for name, c, _ in handed if name == m} for m in ("blip", "finetune")}
    assert [len(per_method["blip"]), len(per_method["finetune"])] == [3, 3]
    assert len(handed) == 3 * 2 * 2 == len(set(handed))
    assert {seed for *_, seed in handed} == {100, 101}
    for name, configuration, _ in handed:
        hp, train = json.loads(configuration)
        assert 0.01 <= train["lr"] <= 0.3
        if name == "blip":
            assert hp["fisher_batches"] == 2 and 1e-17 <= hp["f_prior"] <= 1e-13


def test_the_optuna_search_resumes_from_its_saved_state(tmp_path):
    from blip_ray.experiments.run.searchers import method_search

    spec = search_stage(optuna_spec())
    searcher = method_search(spec, {})
    first = [searcher.suggest(f"t{n}") for n in range(2)]
    for n, _ in enumerate(first):
        searcher.on_trial_complete(f"t{n}", finished(None, 0.4 + n / 10))
    searcher.save(str(tmp_path / "state.pkl"))
    later = [searcher.suggest(f"t{n}") for n in range(2, 6)]
    restored = method_search(spec, {})
    restored.restore(str(tmp_path / "state.pkl"))
    assert [restored.suggest(f"t{n}") for n in range(2, 6)] == later


@pytest.mark.ray
def test_an_optuna_search_runs_through_the_harness(ray_session, tmp_path):
    from blip_ray.experiments.run.protocol import run_protocol

    raw = spec_with(algorithm="optuna", budget=2, seeds=[100])
    raw |= {"tasks": 2}
    raw["methods"] = {"ewc": {"lamb": {"loguniform": [1.0, 1000.0]}}}
    raw["train"] = {"lr": 0.1, "epochs": 1}
    raw["search"]["first_tasks"] = 1
    outcome = run_protocol(parse_spec(raw), storage=str(tmp_path), name="o", verbose=0)
    assert outcome.failed == 0 and outcome.trials == 2 + 2
    searched = load_trials(tmp_path / "o" / SEARCH_STAGE)
    assert len({t.hyperparameters["lamb"] for t in searched}) == 2
    assert all(len(t.matrix) == 1 for t in searched)  # first_tasks: 1
    record = json.loads((tmp_path / "o" / SELECTION_FILE).read_text())
    assert record["algorithm"] == "optuna"
    (final,) = {json.dumps(t.hyperparameters) for t in load_trials(tmp_path / "o" / FINAL_STAGE)}
    assert json.loads(final) == record["methods"]["ewc"]["chosen"]


def test_a_committed_selection_is_checked_against_the_spec(tmp_path):
    record = {
        "metric": "acc",
        "search_seeds": [100, 101],
        "methods": {m: {"chosen": {}} for m in ("blip", "ewc", "finetune")},
    }
    (tmp_path / "selection.json").write_text(json.dumps(record))
    spec = parse_spec(spec_with(selection="selection.json"), base=tmp_path)
    assert spec.search.selection_path == str(tmp_path / "selection.json")
    assert [p.trials for p in stage_plans(spec)] == [3 * 2]  # the final stage only
    text = dry_run_text(spec, cpus=2, estimator=lambda spec, at_once: Estimate(1.0, "fake"))
    assert "selection: selection.json (committed; the search is not run)" in text
    assert "search stage" not in text
    with pytest.raises(SpecError, match="search.selection: missing.json: no such file"):
        parse_spec(spec_with(selection="missing.json"), base=tmp_path)
    del record["methods"]["ewc"]
    (tmp_path / "selection.json").write_text(json.dumps(record))
    with pytest.raises(SpecError, match="chooses nothing for ewc"):
        parse_spec(spec_with(selection="selection.json"), base=tmp_path)
    record["methods"]["ewc"] = {"chosen": {}}
    (tmp_path / "selection.json").write_text(json.dumps(record))
    with pytest.raises(SpecError, match="its search used search_seeds \\[100, 101\\], this spec"):
        parse_spec(spec_with(selection="selection.json", seeds=[7]), base=tmp_path)


def test_an_optuna_search_on_rl_needs_reference_returns_and_scores_normalized_returns():
    from blip_ray.experiments.run.searchers import _validation_score

    raw = {
        "name": "r",
        "benchmark": "cartpole3",
        "methods": {"blip": {"f_prior": {"loguniform": [1e-16, 1e-12]}}},
        "seeds": [0],
        "search": {"algorithm": "optuna", "seeds": [9]},
    }
    with pytest.raises(
        SpecError, match="search.algorithm: optuna on cartpole3 .* has no reference"
    ):
        parse_spec(raw)
    assert parse_spec(raw | {"search": {"seeds": [9]}}).search.algorithm == "random"
    # returns 0..100 with a random policy at 10 and a reference at 110: (R - 10) / 100
    result = {
        "metric": "return",
        "task_names": ["a", "b"],
        "random_row": [10.0, 10.0],
        "num_tasks": 2,
        "tasks_done": 2,
        "valid_matrix": [[60.0, 10.0], [35.0, 110.0]],
    }
    score = _validation_score(result, "acc", {"a": 110.0, "b": 110.0})
    assert score == pytest.approx((0.25 + 1.0) / 2)
    assert _validation_score(result | {"tasks_done": 1}, "acc", {"a": 1.0, "b": 1.0}) is None


def test_smoke_shrinks_a_search_but_keeps_a_committed_selection(tmp_path):
    smoke = parse_spec(SPEC).smoke().search
    assert (smoke.seeds, smoke.budget, smoke.first_tasks) == ((100,), 2, 2)
    record = {
        "metric": "acc",
        "search_seeds": [100, 101],
        "methods": {m: {"chosen": {}} for m in ("blip", "ewc", "finetune")},
    }
    (tmp_path / "selection.json").write_text(json.dumps(record))
    spec = parse_spec(spec_with(selection="selection.json"), base=tmp_path).smoke()
    assert spec.search.seeds == (100, 101) and spec.seeds == (0,)
    from blip_ray.experiments.specs.search import read_selection

    assert read_selection(spec.search, spec.methods) == record  # what the run reads again
