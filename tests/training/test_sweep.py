"""``geco-tf sweep`` (geco_tf/training/sweep.py, cli/sweep.py): the grid, the score, the TOML
writer, the one-variable-at-a-time plan with its resume (on a stand-in trainer, fast), and the
real command on the tiny dataset (slow)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import tomllib
from click.testing import CliRunner

from geco_tf.errors import UserError
from geco_tf.training import sweep
from geco_tf.training.config import TrainConfig, parse_assignments
from geco_tf.training.run import RunDir

# -- the grid, the score, the TOML writer ----------------------------------------------------------


def test_value_grid_is_log_spaced_around_the_centre():
    grid = sweep.value_grid(1e-3, 7)
    assert grid == [3.16e-05, 1e-04, 3.16e-04, 1e-03, 3.16e-03, 1e-02, 3.16e-02]
    ratios = [b / a for a, b in zip(grid, grid[1:])]
    assert all(abs(math.log10(r) - 0.5) < 0.01 for r in ratios)  # half a decade (3 significant digits)
    assert sweep.value_grid(0.02, 3, step=1.0) == [0.002, 0.02, 0.2]
    even = sweep.value_grid(1e-3, 2)  # no value at the centre; symmetric about it in log space
    assert 1e-3 not in even and abs(math.log10(even[0] * even[1]) - math.log10(1e-6)) < 0.01
    assert sweep.value_grid(5.0, 1) == [5.0]
    with pytest.raises(UserError, match="positive centre"):
        sweep.value_grid(0.0, 3)


def test_score_prefers_any_trial_that_meets_the_rule():
    assert sweep.trial_score(0.31, 0.98, True) == 0.31
    unmet_good_ssim = sweep.trial_score(0.10, 0.97, False)
    unmet_bad_ssim = sweep.trial_score(0.10, 0.90, False)
    assert unmet_good_ssim == pytest.approx(1.03) and unmet_bad_ssim == pytest.approx(1.10)
    assert sweep.trial_score(0.99, 0.972, True) < unmet_good_ssim < unmet_bad_ssim
    assert sweep.trial_score(None, None, False) == 3.0


def test_toml_writer_round_trips(tmp_path):
    values = {
        "g_lr": 5e-4, "c_lr": 3.16e-05, "beta": 0.02, "ssim_target": 1.0, "epochs": 15, "jit": False,
        "classifier": "maxpool", "note": 'say "hi" \\ é', "steps_per_epoch": None, "big": float("inf"),
    }
    text = sweep.toml_text(values, ["a comment"])
    assert text.startswith("# a comment\n") and "steps_per_epoch" not in text
    parsed = tomllib.loads(text)
    assert parsed == {k: v for k, v in values.items() if v is not None}
    assert type(parsed["ssim_target"]) is float and type(parsed["epochs"]) is int
    for bad in ({"x": [1, 2]}, {"x": {"a": 1}}, {"not a key": 1}):
        with pytest.raises(ValueError):
            sweep.toml_text(bad)


def test_best_toml_is_a_training_config(tmp_path):
    path = tmp_path / "best.toml"
    sweep.write_toml(path, sweep.toml_text({"g_lr": 5e-4, "c_lr": 5e-4, "beta": 0.02, "base_filters": 8}))
    cfg = TrainConfig.from_toml(path)
    assert (cfg.g_lr, cfg.c_lr, cfg.beta, cfg.base_filters) == (5e-4, 5e-4, 0.02, 8)


def test_trial_settings_from_a_toml_file_and_set(tmp_path):
    path = tmp_path / "base.toml"
    path.write_text('g_lr = 5e-4\nclassifier = "maxpool"\nepochs = 3\n')
    assert sweep.trial_settings(path, ["epochs=1"]) == {"g_lr": 5e-4, "classifier": "maxpool", "epochs": 1}
    path.write_text("g_lr = \n")
    with pytest.raises(UserError, match="base.toml: not valid TOML"):
        sweep.trial_settings(path)
    with pytest.raises(UserError, match="cannot read"):
        sweep.trial_settings(tmp_path / "missing.toml")


def test_parse_assignments():
    got = parse_assignments(["epochs=1", "classifier=maxpool", "jit=true", "beta=2e-2", "output-band=off"])
    assert got == {"epochs": 1, "classifier": "maxpool", "jit": True, "beta": 0.02, "output_band": "off"}
    with pytest.raises(UserError, match="key=value"):
        parse_assignments(["epochs"])


def test_cli_literals_match_the_library():
    from geco_tf_cli import sweep as cli_sweep

    from geco_tf.data.dataset import TARGETS

    assert cli_sweep.TARGETS == TARGETS
    assert cli_sweep.PARAMS == ",".join(sweep.PARAMS)
    assert (cli_sweep.VALUES, cli_sweep.STEP_DECADES, cli_sweep.TRIAL_BUDGET_MINUTES) == (
        sweep.VALUES, sweep.STEP_DECADES, sweep.TRIAL_BUDGET_MINUTES,
    )


# -- the plan and its resume, on a stand-in trainer ------------------------------------------------
#: Where the stand-in trainer's validation accuracy is lowest (the "true" optimum).
OPTIMUM = {"g_lr": 3.16e-4, "c_lr": 3.16e-3, "beta": 1e-3}


class FakeTrainer:
    """Writes what a finished ``train_geco`` run leaves (config.json, history.csv with one
    epoch, metrics.json) with a validation accuracy that grows with the distance, in decades,
    from :data:`OPTIMUM`; records each call; can fail on a chosen call."""

    def __init__(self, interrupt_on: int | None = None, diverge: dict | None = None, adversarial_epochs: int = 1):
        self.calls: list[dict] = []
        self.adversarial_epochs = adversarial_epochs
        self.interrupt_on = interrupt_on
        self.diverge = diverge or {}

    def __call__(self, data_dir, out_dir, target="manufacturer", progress=True, **options):
        self.calls.append(dict(options))
        run = RunDir(out_dir)
        run.create()
        run.write_config({"target": target, "classes": ["a", "b", "c", "d"], "data": str(data_dir),
                          "config": {"ssim_target": 0.972, "warmup_steps": 0, **options}})
        if len(self.calls) == self.interrupt_on:  # Ctrl-C after the run started
            raise KeyboardInterrupt
        if any(options.get(k) == v for k, v in self.diverge.items()):
            raise RuntimeError("epoch 1: losses are not finite (nan, nan)")
        distance = sum(abs(math.log10(options.get(k, 1e-3) / v)) for k, v in OPTIMUM.items())  # 1e-3: default
        accuracy = min(1.0, 0.3 + 0.1 * distance)
        run.write_history([{"epoch": 1, "step": 10, "val_accuracy_cotrained": accuracy, "val_ssim": 0.98,
                            "gen_loss": 1.0, "cls_loss": 1.0, "seconds": 1.0}])
        run.write_metrics({"best_epoch": 1, "ssim_target": 0.972, "learnt_accuracy": 0.0,
                           "epochs_trained": 1, "adversarial_epochs": self.adversarial_epochs,
                           "training_seconds": 1.0})
        return {}


def _sweep(tmp_path, trainer, monkeypatch, **kwargs):
    monkeypatch.setattr(sweep, "train_geco", trainer)
    defaults = {"data_dir": tmp_path / "data", "out_dir": tmp_path / "sweep", "values": 3, "trial_budget": 1.0}
    return sweep.run_sweep(**{**defaults, **kwargs})


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_one_variable_at_a_time_with_the_best_so_far_fixed(tmp_path, monkeypatch):
    trainer = FakeTrainer()
    summary = _sweep(tmp_path, trainer, monkeypatch)
    swept = [{k: c[k] for k in sweep.PARAMS} for c in trainer.calls]
    # g_lr first (others at their defaults 1e-3), then c_lr with g_lr at its best, then beta;
    # a later variable's centre trial is the earlier one's best trial, so 3 + 2 + 2 trials.
    assert swept == [
        {"g_lr": 3.16e-4, "c_lr": 1e-3, "beta": 1e-3},
        {"g_lr": 1e-3, "c_lr": 1e-3, "beta": 1e-3},
        {"g_lr": 3.16e-3, "c_lr": 1e-3, "beta": 1e-3},
        {"g_lr": 3.16e-4, "c_lr": 3.16e-4, "beta": 1e-3},
        {"g_lr": 3.16e-4, "c_lr": 3.16e-3, "beta": 1e-3},
        {"g_lr": 3.16e-4, "c_lr": 3.16e-3, "beta": 3.16e-4},
        {"g_lr": 3.16e-4, "c_lr": 3.16e-3, "beta": 3.16e-3},
    ]
    assert all(c["time_budget_minutes"] == 1.0 for c in trainer.calls)
    assert summary["complete"] and summary["best"] == OPTIMUM and summary["best_score"] == pytest.approx(0.3)
    rows = _rows(tmp_path / "sweep" / "results.csv")
    assert [r["trial"] for r in rows] == [str(i) for i in range(7)]
    assert [r["varied"] for r in rows] == ["g_lr+c_lr", "g_lr", "g_lr", "c_lr", "c_lr+beta", "beta", "beta"]
    assert rows[4]["score"] == "0.3" and rows[4]["rule_met"] == "True" and rows[0]["val_ssim"] == "0.98"
    best = tomllib.loads((tmp_path / "sweep" / "best.toml").read_text())
    assert best == OPTIMUM
    assert (tmp_path / "sweep" / "sweep.png").stat().st_size > 10_000


def test_trials_that_never_played_the_game_are_named_in_a_warning(tmp_path, monkeypatch):
    """A budget too short to leave the warm-up makes every score meaningless: the sweep says so,
    naming the trials; equal epochs everywhere with a game played give no warning."""
    summary = _sweep(tmp_path, FakeTrainer(adversarial_epochs=0), monkeypatch)
    assert len(summary["warnings"]) == 1
    assert summary["warnings"][0].startswith("7 of 7 trials ended inside the generator's warm-up (trials 0, 1, 2")
    rows = _rows(tmp_path / "sweep" / "results.csv")
    assert [r["adversarial_epochs"] for r in rows] == ["0"] * 7
    assert _sweep(tmp_path / "b", FakeTrainer(), monkeypatch)["warnings"] == []


def test_unequal_epochs_are_a_warning():
    rows = [{"trial": str(i), "status": "COMPLETED", "epochs": e, "adversarial_epochs": e - 2} for i, e in enumerate((3, 2, 3))]
    idle, unequal = sweep.budget_warnings(rows)
    assert idle.startswith("1 of 3 trials ended inside the generator's warm-up (trials 1)")
    assert unequal.startswith("trials trained 2 to 3 epochs")
    rows[1]["adversarial_epochs"] = None  # unknown (a run written before the count): no claim
    (warning,) = sweep.budget_warnings(rows)
    assert warning.startswith("trials trained 2 to 3 epochs")
    failed = {"trial": "3", "status": "FAILED", "epochs": None, "adversarial_epochs": None}
    assert sweep.budget_warnings([rows[0], rows[2], failed]) == []


def test_interrupted_sweep_resumes_without_repeating_a_finished_trial(tmp_path, monkeypatch):
    first = FakeTrainer(interrupt_on=3)  # Ctrl-C in the third trial
    with pytest.raises(KeyboardInterrupt):
        _sweep(tmp_path, first, monkeypatch, params=("g_lr", "beta"))
    trials = tmp_path / "sweep" / "trials"
    finished = {p.name: p.joinpath("history.csv").stat().st_mtime_ns for p in trials.iterdir()
                if (p / "metrics.json").exists()}
    assert sorted(finished) == ["0", "1"] and (trials / "2" / "config.json").exists()

    second = FakeTrainer()
    summary = _sweep(tmp_path, second, monkeypatch, params=None, values=None, trial_budget=None, resume=True)
    # trial 2 (cut off) is run again from scratch, then beta's two new values; 0 and 1 are not
    assert [(c["g_lr"], c["beta"]) for c in second.calls] == [(3.16e-3, 1e-3), (3.16e-4, 3.16e-4), (3.16e-4, 3.16e-3)]
    assert {n: trials.joinpath(n, "history.csv").stat().st_mtime_ns for n in finished} == finished
    assert summary["complete"] and summary["trials"] == 5

    results = (tmp_path / "sweep" / "results.csv").read_text()
    third = FakeTrainer()
    again = _sweep(tmp_path, third, monkeypatch, values=None, trial_budget=None, resume=True)
    assert third.calls == [] and again["best"] == summary["best"]
    assert (tmp_path / "sweep" / "results.csv").read_text() == results


def test_interrupted_first_trial_resumes(tmp_path, monkeypatch):
    with pytest.raises(KeyboardInterrupt):  # before KerasTuner saved any tuner state
        _sweep(tmp_path, FakeTrainer(interrupt_on=1), monkeypatch, params=("beta",))
    trainer = FakeTrainer()
    summary = _sweep(tmp_path, trainer, monkeypatch, values=None, trial_budget=None, resume=True)
    assert [c["beta"] for c in trainer.calls] == [3.16e-4, 1e-3, 3.16e-3]
    assert summary["complete"] and summary["trials"] == 3
    assert len(_rows(tmp_path / "sweep" / "results.csv")) == 3


def test_max_trials_stops_and_resume_finishes(tmp_path, monkeypatch):
    trainer = FakeTrainer()
    part = _sweep(tmp_path, trainer, monkeypatch, params=("beta",), max_trials=2)
    assert not part["complete"] and part["trials"] == 2 and len(trainer.calls) == 2
    assert not (tmp_path / "sweep" / "best.toml").exists()
    rest = _sweep(tmp_path, trainer, monkeypatch, values=None, trial_budget=None, resume=True)
    assert rest["complete"] and len(trainer.calls) == 3


def test_a_diverging_value_is_a_failed_trial_not_the_end(tmp_path, monkeypatch):
    trainer = FakeTrainer(diverge={"g_lr": 3.16e-3})
    summary = _sweep(tmp_path, trainer, monkeypatch, params=("g_lr",))
    rows = _rows(tmp_path / "sweep" / "results.csv")
    assert [r["status"] for r in rows] == ["COMPLETED", "COMPLETED", "FAILED"] and rows[2]["score"] == ""
    assert summary["complete"] and summary["best"] == {"g_lr": 3.16e-4}


def test_user_errors(tmp_path, monkeypatch):
    trainer = FakeTrainer()
    with pytest.raises(UserError, match="not a training setting"):
        _sweep(tmp_path, trainer, monkeypatch, params=("g_lr", "nope"))
    with pytest.raises(UserError, match="not a numeric setting"):
        _sweep(tmp_path, trainer, monkeypatch, params=("classifier",))
    with pytest.raises(UserError, match="--trial-budget"):
        _sweep(tmp_path, trainer, monkeypatch, fixed={"time_budget_minutes": 3})
    with pytest.raises(UserError, match="classifier = 'nope': choose one of"):
        _sweep(tmp_path, trainer, monkeypatch, fixed={"classifier": "nope"})
    with pytest.raises(UserError, match=r"--params ssim_target \(value 10\): ssim_target = 10.0: must be <= 1"):
        _sweep(tmp_path, trainer, monkeypatch, params=("ssim_target",), fixed={"ssim_target": 0.1}, values=5, step=1.0)
    with pytest.raises(UserError, match="no sweep to resume"):
        _sweep(tmp_path, trainer, monkeypatch, resume=True)

    def bad_data(*args, **kwargs):
        raise UserError("data: no dataset.json")

    with pytest.raises(UserError, match="no dataset.json"):  # not swallowed as a failed trial
        _sweep(tmp_path, bad_data, monkeypatch, params=("beta",))
    with pytest.raises(UserError, match="already holds a sweep"):
        _sweep(tmp_path, trainer, monkeypatch, params=("beta",))
    with pytest.raises(UserError, match="values is 3"):
        _sweep(tmp_path, trainer, monkeypatch, values=5, resume=True)
    assert trainer.calls == []


# -- the real command -------------------------------------------------------------------------------
TINY = ["--set", "epochs=1", "--set", "base_filters=4", "--set", "depth=2", "--set", "classifier=maxpool",
        "--set", "batch_size=8", "--set", "warmup_steps=2", "--set", "pool_size=32",
        "--set", "spectral_adversary=false", "--set", "selection_probe=none", "--set", "steps_per_epoch=2"]


@pytest.mark.slow
def test_sweep_command_runs_stops_and_resumes(tiny_data, tmp_path):
    from geco_tf_cli.main import cli

    out = tmp_path / "sweep"
    base = ["sweep", "--data", str(tiny_data), "--target", "manufacturer", "--out", str(out), "--quiet"]

    def invoke(*args):
        result = CliRunner().invoke(cli, [*base, *args], prog_name="geco-tf")
        assert result.exit_code == 0, result.output
        return result.output

    # One variable keeps this under 90 s (each trial traces new networks); the order of several
    # variables and the shared centre trial are checked on the stand-in trainer above.
    # Stopped after k = 1 trial ...
    invoke("--params", "beta", "--values", "3", "--trial-budget", "1", "--max-trials", "1", *TINY)
    trials = out / "trials"
    first = {p.name: p.joinpath("history.csv").stat().st_mtime_ns for p in trials.iterdir()}
    assert sorted(first) == ["0"]
    # ... resumed: only the other two run
    output = invoke("--resume")
    assert "trials finished: 3 of 3" in output
    after = {p.name: p.joinpath("history.csv").stat().st_mtime_ns for p in trials.iterdir()}
    assert sorted(after) == ["0", "1", "2"]
    assert {k: after[k] for k in first} == first
    rows = _rows(out / "results.csv")
    assert len(rows) == 3 and all(r["status"] == "COMPLETED" for r in rows)
    assert [float(r["beta"]) for r in rows] == [3.16e-4, 1e-3, 3.16e-3]
    for row in rows:  # each row is its run's own validation numbers
        history = RunDir(trials / row["trial"]).read_history()
        assert float(row["val_accuracy_cotrained"]) == pytest.approx(history[0]["val_accuracy_cotrained"], abs=1e-5)
        assert float(row["val_ssim"]) == pytest.approx(history[0]["val_ssim"], abs=1e-5)
        config = json.loads((trials / row["trial"] / "config.json").read_text())
        settings = config.get("config") or config["options"]
        assert settings["beta"] == float(row["beta"]) and settings["time_budget_minutes"] == 1.0
    best = tomllib.loads((out / "best.toml").read_text())  # a best trial's values, and the --set ones
    chosen = [r for r in rows if float(r["beta"]) == best["beta"]]
    assert len(chosen) == 1 and float(chosen[0]["score"]) == min(float(r["score"]) for r in rows)
    assert best["epochs"] == 1 and best["classifier"] == "maxpool"
    assert (out / "sweep.png").stat().st_size > 10_000

    # a rerun repeats nothing
    results = (out / "results.csv").read_text()
    invoke("--resume")
    assert {p.name: p.joinpath("history.csv").stat().st_mtime_ns for p in trials.iterdir()} == after
    assert (out / "results.csv").read_text() == results
