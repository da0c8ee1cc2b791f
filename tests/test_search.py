"""edgernn search: a tiny search end to end (trials, table, plot, the chosen model retrained, exported,
deployed, measured on the device, and the train command that reproduces it); two worker processes on one
SQLite storage; Ctrl-C keeps the study and --resume continues it; bad budgets in one line, exit 2.

Trials here train a few steps on 30 sequences of JapaneseVowels: seconds each. PostgreSQL is not started
here; the workers share SQLite through the same Optuna RDB storage code.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgernn.cli import cli
from edgernn.runtime.errors import InputError
from edgernn.search import SearchSpace, parse_budget

pytest.importorskip("optuna", reason="edgernn search needs optuna (pip install 'edgernn[train]')")
ROOT = Path(__file__).resolve().parents[1]
BUDGET = "flash=64K,ram=16K,rate=100"


@pytest.fixture(scope="module")
def vowels(tmp_path_factory) -> Path:
    """30 sequences of JapaneseVowels: ten of each of speakers 1-3."""
    lines = (ROOT / "examples" / "data" / "japanese_vowels_train.ts").read_text().splitlines()
    start = lines.index("@data") + 1
    header = [
        line if not line.startswith("@classLabel") else "@classLabel true 1 2 3" for line in lines[:start]
    ]
    kept, seen = [], {}
    for line in lines[start:]:
        label = line.rsplit(":", 1)[1].strip()
        if label in ("1", "2", "3") and seen.get(label, 0) < 10:
            seen[label] = seen.get(label, 0) + 1
            kept.append(line)
    path = tmp_path_factory.mktemp("search") / "vowels.ts"
    path.write_text("\n".join(header + kept) + "\n")
    return path


def _args(data: Path, out: Path, *more: str) -> list[str]:
    return ["search", str(data), "-o", str(out), "--device", "cortex-m4", "--budget", BUDGET,
            "--trial-steps", "12", "--cells", "gru", "--max-layers", "1", *more]  # fmt: skip


def _process(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "edgernn", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)  # fmt: skip


def _trained(database: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(database) as db:
        return db.execute("select number, state from trials order by number").fetchall()


@pytest.mark.slow
def test_a_tiny_search_end_to_end(vowels, tmp_path):
    measure = (
        shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm") and shutil.which("llvm-mca-14")
    )
    if not measure and os.environ.get("CI") == "true":
        pytest.fail(
            "cortex-m4: the Arm toolchain is missing (Debian packages gcc-arm-none-eabi qemu-system-arm llvm-14)"
        )
    out = tmp_path / "run"
    more = ["--trials", "2", "--precision", "int8", "--json"] + ([] if measure else ["--no-measure"])
    done = CliRunner().invoke(cli, _args(vowels, out, *more))
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout)
    assert summary["metric"] == "accuracy" and summary["folds"] == 3 and summary["trials"] >= 2
    assert (out / "search.db").is_file() and (out / "trials.png").read_bytes()[:4] == b"\x89PNG"
    rows = (out / "trials.csv").read_text().splitlines()
    assert rows[0].startswith("trial,state,cell") and len(rows) == summary["trials"] + 1
    chosen, result = summary["chosen"], summary["result"]
    assert chosen["cell"] == "gru" and chosen["precision"] == "int8" and 0 <= chosen["value"] <= 1
    assert (out / "best" / "model.onnx").is_file() and (out / "deploy-cortex-m4" / "model.c").is_file()
    assert any("self-test" in check or "steps" in check for check in result["deploy_checks"])
    command = result["command"]
    assert command.startswith(
        f"edgernn train {vowels} -o {out / 'best'} --task classify --cell gru --num-layers 1"
    )
    assert (
        "--steps 18" in command
    )  # 12 a trial: as many passes over the data as each of 3 folds made and f"--hidden-size {chosen['hidden_size']}" in command
    assert "--all-data" in command.split() and summary["result"]["best_val_accuracy"] is not None
    if measure:
        measured = result["measured"]
        assert measured["device"] == "cortex-m4" and measured["precision"] == "int8"
        assert measured["flash_bytes"] <= 65536 and measured["instructions"]["median"] > 1000
    # the command reproduces the retrained model
    again = CliRunner().invoke(cli, ["train", command.split()[2], "-o", str(tmp_path / "again"),
                                     *command.split()[5:], "--quiet"])  # fmt: skip
    assert again.exit_code == 0, again.output
    first = json.loads((out / "best" / "metrics.json").read_text())
    second = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert first["best_val_loss"] == second["best_val_loss"] and first["steps"] == second["steps"] == 18


@pytest.mark.slow
def test_two_workers_share_one_sqlite_study(vowels, tmp_path):
    """Two processes, one study (multi-objective: accuracy against cycles per step, the Pareto front)."""
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    common = ["--trials", "4", "--no-measure", "--storage", storage, "--study", "shared", "--pareto"]
    workers = [_process(_args(vowels, tmp_path / f"worker{i}", *common)) for i in (0, 1)]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    for worker, (stdout, stderr) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, stderr[-2000:]
        assert "chosen: trial" in stdout and "Pareto front (accuracy against cycles): trials " in stdout
    trials = _trained(tmp_path / "shared.db")
    numbers = [n for n, _ in trials]
    assert len(numbers) == len(set(numbers)) >= 4
    lines = [[line for line in stderr.splitlines() if line.startswith("trial ")] for _, stderr in outputs]
    assert all(lines), "each worker ran trials of the shared study"
    mine = [{int(line.split()[1].rstrip(":")) for line in worker} for worker in lines]
    assert not mine[0] & mine[1], "no trial ran twice"


@pytest.mark.slow
def test_ctrl_c_keeps_the_study_and_resume_continues_it(vowels, tmp_path):
    out = tmp_path / "run"
    worker = _process(_args(vowels, out, "--trials", "3", "--no-measure", "--trial-steps", "400"))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((out / "trials").glob("*/fold0")):
        time.sleep(0.5)
    worker.send_signal(signal.SIGINT)
    stdout, stderr = worker.communicate(timeout=120)
    assert worker.returncode == 130, stderr[-2000:]
    assert "search interrupted after" in stderr and "--resume" in stderr and "Traceback" not in stderr
    assert (out / "search.db").is_file() and not (out / "best").exists()
    again = CliRunner().invoke(
        cli, _args(vowels, out, "--trials", "2", "--no-measure", "--trial-steps", "400")
    )
    assert again.exit_code == 2 and "already holds the search" in again.output
    resumed = _process(_args(vowels, out, "--trials", "2", "--no-measure", "--trial-steps", "12", "--resume"))
    stdout, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 2 and "another trial_steps" in stderr, stderr[-2000:]
    resumed = _process(
        _args(vowels, out, "--trials", "2", "--no-measure", "--trial-steps", "400", "--resume")
    )
    stdout, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr[-2000:]
    states = [state for _, state in _trained(out / "search.db")]
    assert states.count("COMPLETE") + states.count("PRUNED") >= 2 and "FAIL" in states
    assert (out / "best" / "model.onnx").is_file()


@pytest.mark.parametrize(
    ("budget", "message"),
    [
        ("flash=", "expected key=value pairs"),
        ("speed=9", "expected key=value pairs"),
        ("flash=12Q", "flash '12Q'"),
        ("rate=fast", "rate='fast'"),
        ("flash=1K,flash=2K", "flash given twice"),
        ("rate=10,us=5", "a step rate and a time per step"),
        ("flash=1K", "no model fits"),
    ],
)
def test_bad_budgets_get_one_line_and_exit_2(vowels, tmp_path, budget, message):
    args = ["search", str(vowels), "-o", str(tmp_path / "r"), "--device", "cortex-m4", "--budget", budget]
    done = CliRunner().invoke(cli, args)
    assert done.exit_code == 2, done.output
    lines = done.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.output
    assert not (tmp_path / "r" / "best").exists()


def test_an_unknown_device_lists_the_known_ones():
    with pytest.raises(InputError, match="expected one of cortex-m0plus"):
        parse_budget("flash=64K", "pdp11")


def test_folds_cover_every_sequence_once_stratified_by_class():
    from types import SimpleNamespace

    from edgernn.search import fold_data, folds_for

    @dataclass
    class Data:
        task: str
        train: list
        validation: list

    cases = [(f"x{i}", i % 3) for i in range(40)]
    data = Data("classify", cases[:30], cases[30:])
    assert folds_for("classify", data, None) == 3 and folds_for("forecast", SimpleNamespace(), None) == 1
    assert folds_for("classify", data, 1) == 1 and folds_for("keyword", data, 5) == 1
    held = [fold_data(data, 3, fold, seed=0).validation for fold in range(3)]
    assert sorted(x for fold in held for x, _ in fold) == sorted(x for x, _ in cases)
    for fold, validation in enumerate(held):
        train = fold_data(data, 3, fold, seed=0).train
        assert len(train) + len(validation) == 40 and not {x for x, _ in train} & {x for x, _ in validation}
        counts = [sum(1 for _, label in validation if label == c) for c in range(3)]
        assert max(counts) - min(counts) <= 1 and 13 <= len(validation) <= 14
    assert fold_data(data, 1, 0, seed=0) is data


def test_all_data_trains_on_every_case_and_keeps_the_last_weights(vowels, tmp_path):
    from edgernn.models import ModelConfig
    from edgernn.train import TrainConfig, train_task

    config = TrainConfig(budget_minutes=None, max_steps=6, eval_every=2, batch_size=8, all_data=True)
    result = train_task(
        "classify", vowels, tmp_path / "all", ModelConfig(hidden_size=8), config, progress=False
    )
    metrics = result.metrics
    assert metrics["train_size"] == metrics["validation_size"] == 30
    assert metrics["best_step"] == metrics["steps"] == 6 and "every case trains" in metrics["all_data"]
    held = train_task("classify", vowels, tmp_path / "held", ModelConfig(hidden_size=8),
                      TrainConfig(budget_minutes=None, max_steps=6, eval_every=2, batch_size=8), progress=False)  # fmt: skip
    assert held.metrics["train_size"] == 23 and held.metrics["validation_size"] == 7
    with pytest.raises(InputError, match="all_data trains a classifier on every case; the task is forecast"):
        train_task("forecast", ROOT / "examples" / "data" / "ucr_internalbleeding16_train.csv", tmp_path / "f",
                   ModelConfig(hidden_size=8), config, progress=False)  # fmt: skip
    assert not (tmp_path / "f" / "model.safetensors").exists()


def test_a_new_study_starts_from_the_recipe(tmp_path):
    from edgernn.plan import Io
    from edgernn.search import SearchSettings, SearchSpace, recipe_params
    from edgernn.search_study import open_study

    space = SearchSpace(cells=("lstm", "gru"), precisions=("int8",), max_layers=2, max_hidden=48)
    recipe = recipe_params(space, Io("features", 12, 9), "classify")
    assert recipe == {"cell": "gru", "num_layers": 2, "hidden_size": 48, "learning_rate": 3e-3,
                      "precision": "int8", "dropout": 0.2, "input_noise": 0.4}  # fmt: skip
    one = recipe_params(SearchSpace(max_layers=1), Io("tokens", 30, 30), "charlm")
    assert one["num_layers"] == 1 and one["embedding_size"] == 32 and one["seq_len"] == 32
    assert "dropout" not in one and "input_noise" not in one
    # the noise was measured for classifiers; forecasting starts without, a narrower space caps it
    assert recipe_params(space, Io("features", 3, 3), "forecast")["input_noise"] == 0.0
    assert (
        recipe_params(SearchSpace(max_input_noise=0.25), Io("features", 12, 9), "classify")["input_noise"]
        == 0.25
    )
    settings = SearchSettings(space=space)
    study = open_study(tmp_path, None, "s", "maximize", settings, {"data": "x"}, False, recipe)
    waiting = study.get_trials(deepcopy=False)
    assert len(waiting) == 1 and waiting[0].state.name == "WAITING"
    assert waiting[0].system_attrs["fixed_params"] == recipe
    again = open_study(tmp_path, None, "s", "maximize", settings, {"data": "x"}, True, recipe)
    assert len(again.get_trials(deepcopy=False)) == 1  # a resumed study is not given it twice


def test_equal_accuracy_is_ranked_by_the_lower_validation_loss():
    from types import SimpleNamespace

    import optuna

    from edgernn.search_result import choose

    study = optuna.create_study(direction="maximize")
    for value, loss in ((0.9, 0.5), (0.95, 0.4), (0.95, 0.2), (0.8, 0.1)):
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs={"val_loss": loss}))
    search = SimpleNamespace(settings=SimpleNamespace(objectives=1), direction="maximize")
    ranked, front = choose(study, search)
    assert [t.number for t in ranked] == [2, 1, 0, 3] and front == []


def test_the_best_trials_are_confirmed_on_another_split_before_one_is_chosen():
    from types import SimpleNamespace

    import optuna

    from edgernn.search_result import choose, confirm

    study = optuna.create_study(direction="maximize")
    params = {"cell": "gru", "num_layers": 1, "hidden_size": 8, "learning_rate": 3e-3, "precision": "float32"}
    distributions = _space("gru")
    for values, loss in (([0.9, 0.9], 0.3), ([1.0, 0.9], 0.2), ([0.7, 0.7], 0.1), ([0.9, 0.9], 0.4)):
        trial = optuna.trial.create_trial(value=sum(values) / 2, params={**params, "hidden_size": 8 * len(study.trials) + 8},
                                          distributions=distributions, user_attrs={"fold_values": values, "val_loss": loss})  # fmt: skip
        study.add_trial(trial)
    again = {16: [0.6, 0.6], 8: [0.9, 1.0], 32: [1.0, 1.0]}  # by hidden size: trial 1 was lucky
    seen = []

    def cross_validate(chosen, folder, seed):
        seen.append((chosen.model["hidden_size"], seed, folder.name))
        return again[chosen.model["hidden_size"]], [0.3, 0.3]

    search = SimpleNamespace(settings=SimpleNamespace(objectives=1, seed=4), direction="maximize", refit=True,
                             run_dir=Path("/nonexistent"), cross_validate=cross_validate, say=lambda line: None)  # fmt: skip
    ranked, _ = choose(study, search)
    assert [t.number for t in ranked] == [1, 0, 3, 2]
    assert [t.number for t in confirm(search, study, ranked)] == [3, 0, 1, 2]
    assert seen == [(16, 5, "confirm1"), (16, 6, "confirm2"), (16, 7, "confirm3"), (8, 5, "confirm1"),
                    (8, 6, "confirm2"), (8, 7, "confirm3"), (32, 5, "confirm1"), (32, 6, "confirm2"),
                    (32, 7, "confirm3")]  # fmt: skip
    assert study.user_attrs["confirmed"]["3"] == {
        "seeds": [5, 6, 7],
        "values": [1.0] * 6,
        "losses": [0.3] * 6,
    }
    assert [t.number for t in confirm(search, study, ranked)] == [3, 0, 1, 2] and len(seen) == 9  # kept
    search.refit = False
    assert confirm(search, study, ranked) == ranked


def _space(cell: str) -> dict:
    """The distributions of a hand-made study's trials: one cell, 1-2 layers, hidden 8-64, float32."""
    import optuna

    return {
        "cell": optuna.distributions.CategoricalDistribution([cell]),
        "num_layers": optuna.distributions.IntDistribution(1, 2),
        "hidden_size": optuna.distributions.IntDistribution(8, 64, step=8),
        "learning_rate": optuna.distributions.FloatDistribution(1e-3, 2e-2, log=True),
        "precision": optuna.distributions.CategoricalDistribution(["float32"]),
    }


def _fixed(**params):
    import optuna

    base = {"cell": "gru", "hidden_size": 16, "learning_rate": 3e-3, "input_noise": 0.0, "precision": "int8"}
    return optuna.trial.FixedTrial({**base, **params})


def test_dropout_is_drawn_only_between_layers():
    from edgernn.plan import Io
    from edgernn.search import draw

    space, io = SearchSpace(max_layers=2), Io("features", 12, 9)
    one = draw(_fixed(num_layers=1), space, io, "classify")  # a FixedTrial refuses a parameter it lacks
    assert one.model["num_layers"] == 1 and one.model["dropout"] == 0.0
    two = draw(_fixed(num_layers=2, dropout=0.15), space, io, "classify")
    assert two.model["dropout"] == 0.15
    with pytest.raises(ValueError, match="dropout"):
        draw(_fixed(num_layers=2), space, io, "classify")


def _search(budget: str, **space):
    from edgernn.cost_model import load_cost_model
    from edgernn.plan import Io
    from edgernn.search import Search, SearchSettings, space_for

    said = []
    cost_model = load_cost_model()
    budget = parse_budget(budget, "cortex-m4", cost_model)
    io = Io("features", 12, 9)
    settings = SearchSettings(task="classify", space=space_for(budget, io, SearchSpace(**space), cost_model))
    search = Search("data.ts", Path("/nonexistent"), "cortex-m4", budget, settings, cost_model, io=io,
                    say=said.append)  # fmt: skip
    return search, said


def test_a_recipe_that_does_not_fit_starts_from_its_nearest_fitting_configuration():
    from edgernn.search import draw_from_params

    search, said = _search("flash=256K,ram=64K,rate=100")
    assert search.recipe()["hidden_size"] == 64 and search.recipe()["precision"] == "float32" and not said
    search, said = _search("flash=64K,ram=16K,rate=100")  # a float32 GRU 2x64 needs some 164K of flash
    recipe = search.recipe()
    assert (recipe["cell"], recipe["num_layers"], recipe["hidden_size"], recipe["precision"]) == (
        "gru",
        2,
        64,
        "int8",
    )
    assert said == ["the hand-set recipe (gru 2x64 float32, input noise 0.4) does not fit the budget (flash): the "
                    "first trial is its nearest configuration that does, gru 2x64 int8, input noise 0.4"]  # fmt: skip
    search, said = _search("flash=16K,ram=8K,rate=100", precisions=("float32",))
    recipe = search.recipe()
    assert recipe["num_layers"] == 2 and 8 <= recipe["hidden_size"] < 64 and search.fits(recipe)
    assert not search.fits({**recipe, "hidden_size": recipe["hidden_size"] + 8})
    assert draw_from_params(recipe).model["dropout"] == 0.2
    search, said = _search("flash=8K,ram=4K,rate=100", precisions=("float32",), max_layers=2)
    recipe = search.recipe()
    if recipe is None:
        assert "nor does any narrower or shallower configuration of it" in said[0]
    else:
        assert search.fits(recipe) and ("dropout" in recipe) == (recipe["num_layers"] == 2)


def test_integer_deployments_calibrate_on_the_search_data(tmp_path, monkeypatch):
    import edgernn.export
    import edgernn.export.deploy

    search, _ = _search("flash=256K,ram=64K,rate=100")
    search.settings.measure = False
    calls = []
    monkeypatch.setattr(edgernn.export, "export_run", lambda run, model: None)
    monkeypatch.setattr(edgernn.export.deploy, "deploy", lambda *a, **k: calls.append((a[2].name, k)))

    class Trial:
        user_attrs: dict = {}

        def set_user_attr(self, key, value):
            self.user_attrs[key] = value

    for precision in ("integer", "int8", "float32"):
        search._measure(Trial(), tmp_path, precision, 1.0)
    assert calls == [("c-integer", {"precision": "integer", "data": "data.ts"}),
                     ("c-int8", {"precision": "int8", "data": None}),
                     ("c-float32", {"precision": "float32", "data": None})]  # fmt: skip


def test_the_recipe_is_confirmed_wherever_it_ranked_and_kept_unless_beaten_on_fresh_splits():
    from types import SimpleNamespace

    import optuna

    from edgernn.search_result import choose, confirm

    study = optuna.create_study(direction="maximize")
    distributions = _space("gru")
    params = {"cell": "gru", "num_layers": 2, "learning_rate": 3e-3, "precision": "float32"}
    for hidden, value in ((64, 0.90), (8, 0.95), (16, 0.94), (24, 0.93), (32, 0.92)):
        study.add_trial(optuna.trial.create_trial(
            value=value, params={**params, "hidden_size": hidden}, distributions=distributions,
            user_attrs={"fold_values": [value] * 3, "val_loss": 0.3},
            system_attrs={"fixed_params": {**params, "hidden_size": hidden}} if hidden == 64 else {},
        ))  # fmt: skip
    again = {64: 0.99, 8: 0.88, 16: 0.90, 24: 0.93}  # trial 0 is the recipe, the last but one ranked
    seen = []

    def cross_validate(chosen, folder, seed):
        seen.append(chosen.model["hidden_size"])
        return [again[chosen.model["hidden_size"]]] * 3, [0.3] * 3

    search = SimpleNamespace(settings=SimpleNamespace(objectives=1, seed=0), direction="maximize", refit=True,
                             run_dir=Path("/nonexistent"), cross_validate=cross_validate, say=lambda line: None)  # fmt: skip
    ranked, _ = choose(study, search)
    assert [t.number for t in ranked] == [1, 2, 3, 4, 0]
    assert [t.number for t in confirm(search, study, ranked)] == [0, 3, 2, 1, 4]
    assert seen == [8, 8, 8, 16, 16, 16, 24, 24, 24, 64, 64, 64]  # three fresh splits each; only they rank
    again[64] = 0.5  # beaten on the fresh splits: the best of the others there is chosen
    study.set_user_attr("confirmed", {})
    assert [t.number for t in confirm(search, study, ranked)] == [3, 2, 1, 0, 4]


def test_a_challenger_replaces_the_recipe_only_by_more_than_a_standard_error_fold_by_fold():
    import statistics

    from edgernn.search_result import beats_recipe

    recipe = [12 / 13, 13 / 14, 12 / 13, 13 / 13, 12 / 14, 13 / 13, 11 / 13, 13 / 14, 13 / 13]  # 3 splits x 3
    sizes = [13, 14, 13, 13, 14, 13, 13, 14, 13]

    def ahead(folds: int) -> list[float]:  # one sequence more right in each of the first ``folds`` folds
        return [r + (1 / n if i < folds else 0.0) for i, (r, n) in enumerate(zip(recipe, sizes, strict=True))]

    assert not beats_recipe(recipe, recipe, 3)["clears"]  # a tie keeps the recipe
    one = beats_recipe(ahead(1), recipe, 3)
    assert 0 < one["gain"] < one["standard_error"] and not one["clears"]
    # two sequences more in 120: past the plain standard error of the nine differences, not the one
    # corrected for folds that share their training sequences (sqrt(1/9 + 1/2) against sqrt(1/9))
    two = beats_recipe(ahead(2), recipe, 3)
    plain = statistics.stdev([c - r for c, r in zip(ahead(2), recipe, strict=True)]) / 3
    assert plain < two["gain"] < two["standard_error"] and not two["clears"]
    assert two["standard_error"] == pytest.approx(plain * 3 * (1 / 9 + 1 / 2) ** 0.5)
    assert not beats_recipe(ahead(3), recipe, 3)["clears"] and beats_recipe(ahead(4), recipe, 3)["clears"]
    # the same count right, the challenger's error in a fold of 14 where the recipe's was in one of 13:
    # a higher mean of fold accuracies, no more sequences right
    moved = [recipe[0] + 1 / 13, recipe[1] - 1 / 14, *recipe[2:]]
    assert beats_recipe(moved, recipe, 3)["gain"] > 0 and not beats_recipe(moved, recipe, 3)["clears"]
    steady = [r + 1 / 14 for r in recipe]  # ahead on every fold
    assert (
        beats_recipe(steady, recipe, 3)["clears"] and beats_recipe(steady, recipe, 3)["standard_error"] < 1e-9
    )
    assert not beats_recipe(recipe, steady, 3)["clears"]
    with pytest.raises(ValueError, match="same length"):
        beats_recipe(recipe[:3], recipe, 3)


def test_a_higher_fresh_mean_that_does_not_clear_the_margin_ranks_after_the_recipe():
    from types import SimpleNamespace

    import optuna

    from edgernn.search_result import choose, confirm, to_text

    study = optuna.create_study(direction="maximize")
    params = {"cell": "gru", "num_layers": 2, "learning_rate": 3e-3, "precision": "float32"}
    for hidden, value in ((64, 0.90), (8, 0.95), (16, 0.94), (24, 0.93)):
        study.add_trial(optuna.trial.create_trial(
            value=value, params={**params, "hidden_size": hidden}, distributions=_space("gru"),
            user_attrs={"val_loss": 0.3},
            system_attrs={"fixed_params": {**params, "hidden_size": hidden}} if hidden == 64 else {},
        ))  # fmt: skip
    recipe = [0.9, 0.8, 0.9] * 3
    again = {
        64: recipe,
        8: [r + d for r, d in zip(recipe, (0.1, -0.1, 0.1, 0.1, -0.1, 0.0, 0.1, -0.1, 0.1), strict=True)],
        16: [r + 0.02 for r in recipe],  # a little ahead on every fold
        24: [0.9, 0.8, 0.9] * 3,  # a tie
    }

    def cross_validate(chosen, folder, seed):
        split = int(folder.name.removeprefix("confirm")) - 1
        return again[chosen.model["hidden_size"]][3 * split : 3 * split + 3], [0.3] * 3

    said = []
    search = SimpleNamespace(settings=SimpleNamespace(objectives=1, seed=0), direction="maximize", refit=True,
                             run_dir=Path("/nonexistent"), cross_validate=cross_validate, say=said.append)  # fmt: skip
    ranked, _ = choose(study, search)
    assert [t.number for t in ranked] == [1, 2, 3, 0]
    assert [t.number for t in confirm(search, study, ranked)] == [2, 0, 1, 3]
    margins = study.user_attrs["margins"]
    assert margins["2"]["clears"] and not margins["1"]["clears"] and not margins["3"]["clears"]
    assert margins["1"]["gain"] > margins["2"]["gain"]  # the higher mean, but the folds disagree
    assert any(
        line.startswith("trial 1 against the recipe's trial") and "the recipe stays" in line for line in said
    )
    again[16] = recipe  # no challenger clears: the recipe's trial first
    study.set_user_attr("confirmed", {})
    assert [t.number for t in confirm(search, study, ranked)] == [0, 1, 2, 3]
    summary = {"table": "", "pareto_front": [], "metric": "accuracy", "margins": margins,
               "chosen": {"trial": 0, "value": 0.9, "cell": "gru", "num_layers": 2, "hidden_size": 64,
                          "precision": "float32", "recipe": True},
               "result": {"run_dir": "best", "best_val_loss": 0.3, "model": "m", "deployed": "d", "command": "c"}}  # fmt: skip
    assert "the recipe's trial kept: no other cleared the margin" in to_text(summary)


def test_a_chosen_model_whose_c_fails_its_self_test_gives_way_to_the_next_best(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import optuna

    import edgernn.search_result as result
    from edgernn.runtime.errors import ParityError

    study = optuna.create_study(direction="maximize")
    params = {"cell": "rnn_tanh", "num_layers": 1, "learning_rate": 3e-3, "precision": "float32"}
    distributions = _space("rnn_tanh")
    for hidden, value in ((8, 0.9), (16, 0.95)):
        study.add_trial(optuna.trial.create_trial(value=value, params={**params, "hidden_size": hidden},
                                                  distributions=distributions, user_attrs={"val_loss": 0.3}))  # fmt: skip

    def retrain_and_deploy(search, chosen, progress):
        if chosen.model["hidden_size"] == 16:
            raise ParityError(["the generated C failed its self-test on this machine: mismatch at step 763"])
        return {"hidden_size": chosen.model["hidden_size"]}

    monkeypatch.setattr(result, "retrain_and_deploy", retrain_and_deploy)
    search = SimpleNamespace(settings=SimpleNamespace(objectives=1), direction="maximize", refit=False,
                             run_dir=tmp_path, folds=3, budget=SimpleNamespace(step_us=None, flash_bytes=None))  # fmt: skip
    summary = result.finish(search, study, progress=False)
    assert summary["chosen"]["trial"] == 0 and summary["result"] == {"hidden_size": 8}
    assert summary["refused"][0]["trial"] == 1 and "self-test" in summary["refused"][0]["error"]
    assert json.loads((tmp_path / "search.json").read_text())["chosen"]["hidden_size"] == 8


def test_a_trial_another_worker_finished_first_is_left_to_it_and_the_worker_goes_on():
    """SQLite has no row locks: two workers may pop the same enqueued trial, and the second to finish it
    cannot tell it. That worker says so and goes on; any other error still ends the search."""
    from types import SimpleNamespace

    from edgernn.search_study import run_trials

    class Study:
        def __init__(self, errors):
            self.errors, self.calls = list(errors), 0

        def get_trials(self, deepcopy=False, states=None):
            return []

        def optimize(self, objective, timeout=None, callbacks=(), gc_after_trial=True):
            self.calls += 1
            if self.errors:
                raise self.errors.pop(0)

    said: list[str] = []
    search = SimpleNamespace(
        settings=SimpleNamespace(trials=4, minutes=None), say=said.append, objective=None
    )
    raced = Study([ValueError("Cannot tell a COMPLETE trial."), ValueError("Cannot tell a COMPLETE trial.")])
    run_trials(search, raced)
    assert raced.calls == 3
    assert said == ["a trial this worker ran was finished first by another worker; going on"] * 2
    other = Study([ValueError("something else")])
    with pytest.raises(ValueError, match="something else"):
        run_trials(search, other)
    endless = Study([ValueError("Cannot tell a COMPLETE trial.")] * 20)
    with pytest.raises(ValueError, match="Cannot tell"):
        run_trials(search, endless)
    assert endless.calls == 11  # RACED_TRIALS_LIMIT retries, then the error


def test_a_trial_line_names_its_input_noise():
    import optuna

    from edgernn.search_study import describe_trial

    params = {
        "cell": "gru",
        "num_layers": 2,
        "hidden_size": 64,
        "precision": "float32",
        "learning_rate": 3e-3,
    }
    space = {**_space("gru"), "input_noise": optuna.distributions.FloatDistribution(0.0, 0.6, step=0.05)}
    cost = {"measured": {"cycles": 208714, "flash_bytes": 163002}}
    study = optuna.create_study()
    study.add_trials([
        optuna.trial.create_trial(params={**params, "input_noise": 0.4}, distributions=space, value=0.9778,
                                  user_attrs=cost),
        optuna.trial.create_trial(params={**params, "input_noise": 0.0}, distributions=space, value=0.5),
    ])  # fmt: skip
    noisy, quiet = study.get_trials()
    assert describe_trial(noisy, "maximize") == (
        "trial 0: gru 2x64 float32 lr 0.003 input noise 0.4: accuracy 0.9778; 208,714 cycles, 163,002 B flash (measured)"
    )
    assert describe_trial(quiet, "minimize") == "trial 1: gru 2x64 float32 lr 0.003: val loss 0.5000"
