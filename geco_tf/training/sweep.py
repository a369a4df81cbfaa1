"""``run_sweep``: the GECO paper's hyper-parameter sweep (section 3.4) on KerasTuner.

Why it exists: the paper tuned three variables -- the generator's learning rate, the
classifier's learning rate and beta -- one at a time over about seven log-spaced values each,
and a group adopting GECO on its own scanners has to redo that. This module runs it as the
paper describes and leaves files a person can read (``docs/sweep.md``):

* **Order.** The variables are swept one at a time in the order given (``g_lr``, ``c_lr``,
  ``beta``); while one is swept every other variable is fixed -- the earlier ones at the best
  value found for them, the later ones at their centre (the training default, or the value
  given with ``fixed``). A trial whose configuration an earlier one already ran (the centre of
  a later variable is the best trial of the one before) is not run twice.
* **Values.** :func:`value_grid`: ``n`` values centred on the centre in log space, ``step``
  decades apart (half a decade by default: centre x 10^(k/2), k = -3..3 for seven values),
  rounded to three significant digits.
* **Trial.** One time-budgeted :func:`~geco_tf.training.train.train_geco` run in
  ``SWEEP/trials/<id>/``. Its objective (:func:`trial_score`, lower is better) is the run's own
  best-epoch rule on the *validation* split (never test): the validation leakage
  (:func:`~geco_tf.training.run.validation_leakage`: the co-trained classifier's accuracy, or
  the highest of the adversaries' when the run has a spectral adversary or a fresh probe) of the
  epoch the run keeps, when that epoch meets the rule (after the warm-up, after an adversary
  learnt the target, SSIM at the target); otherwise ``2 - SSIM`` of the kept epoch, so any
  trial that meets the rule beats any that does not.
* **KerasTuner.** :class:`OneAtATimeOracle` (a custom ``keras_tuner.Oracle``) decides the next
  trial from the finished ones, and :class:`SweepTuner` (a ``keras_tuner.Tuner`` whose
  ``run_trial`` trains) runs them. The oracle saves every trial under ``SWEEP/tuner/``, so a
  sweep reopened with ``resume=True`` (``overwrite=False``) repeats no finished trial and
  restarts the one that was cut off; its chief/worker mode (``KERASTUNER_TUNER_ID``,
  ``KERASTUNER_ORACLE_IP``, ``KERASTUNER_ORACLE_PORT``) runs a variable's trials on several
  machines at once.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import keras_tuner
import matplotlib
import tomllib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from geco_tf.data.dataset import TARGETS  # noqa: E402
from geco_tf.errors import UserError  # noqa: E402
from geco_tf.io import atomic_path, write_json_atomic, write_text_atomic  # noqa: E402
from geco_tf.progress import QUIET, Progress  # noqa: E402
from geco_tf.training.config import TrainConfig, parse_assignments, read_toml  # noqa: E402
from geco_tf.training.run import RunDir, learnt_accuracy, select_best, validation_leakage  # noqa: E402
from geco_tf.training.train import train_geco  # noqa: E402


def training_defaults() -> dict:
    """Every training setting's default, by field name (:class:`TrainConfig`)."""
    return TrainConfig().to_dict()


#: The paper's three variables, in the paper's order (section 3.4).
PARAMS = ("g_lr", "c_lr", "beta")
#: Values per variable ("approximately seven", section 3.4).
VALUES = 7
#: Decades between neighbouring values (7 values then span 10^-1.5 .. 10^1.5 x the centre).
STEP_DECADES = 0.5
#: Minutes of training per trial (19 trials of the 7 x 3 sweep fit in about two hours on 2 cores).
TRIAL_BUDGET_MINUTES = 5.0
#: Settings a sweep itself sets on every trial (not allowed in ``fixed``).
SWEEP_OWNED = ("time_budget_minutes",)
#: Columns of ``SWEEP/results.csv`` after the swept variables.
RESULT_COLUMNS = (
    "val_accuracy_cotrained",
    "val_leakage",
    "val_ssim",
    "ssim_target",
    "rule_met",
    "score",
    "kept_epoch",
    "epochs",
    "adversarial_epochs",
    "minutes",
)
#: Seconds a worker waits before asking the chief again while a variable's last trials run.
IDLE_WAIT_SECONDS = 10.0

_OBJECTIVE = "score"
_COMPLETED = keras_tuner.engine.trial.TrialStatus.COMPLETED
_FAILED = keras_tuner.engine.trial.TrialStatus.FAILED
_RUNNING = keras_tuner.engine.trial.TrialStatus.RUNNING
_IDLE = keras_tuner.engine.trial.TrialStatus.IDLE
_STOPPED = keras_tuner.engine.trial.TrialStatus.STOPPED


# -- the grid and the score ---------------------------------------------------------------------
def value_grid(centre: float, n: int = VALUES, step: float = STEP_DECADES) -> list[float]:
    """``n`` values centred on ``centre`` in log space, ``step`` decades apart: ``centre x
    10^(step k)`` for ``k = -(n-1)/2 .. (n-1)/2`` (the centre itself when ``n`` is odd), each
    rounded to three significant digits, in increasing order."""
    if not centre > 0 or not math.isfinite(centre):
        raise UserError(f"a log-spaced sweep needs a positive centre value, not {centre!r}")
    if n < 1:
        raise UserError(f"--values {n}: use at least 1")
    if not step > 0:
        raise UserError(f"--step {step}: use a positive number of decades")
    half = (n - 1) / 2
    return [_round3(centre * 10 ** (step * (k - half))) for k in range(n)]


def trial_score(leakage: float | None, ssim: float | None, rule_met: bool) -> float:
    """A trial's objective, lower is better: the kept epoch's validation leakage (in [0, 1])
    when it meets the run's best-epoch rule, else ``2 - SSIM`` of the kept epoch (above 1, so
    any trial that meets the rule ranks above any that does not; among those that do not, the
    higher SSIM ranks first)."""
    if rule_met and leakage is not None:
        return float(leakage)
    return 2.0 - float(ssim if ssim is not None and math.isfinite(ssim) else -1.0)


def trial_outcome(run_dir: str | Path) -> dict:
    """The sweep's numbers for a finished training run: the kept epoch (``metrics.json``'s
    ``best_epoch``), its validation co-trained accuracy, leakage and SSIM (``history.csv``),
    whether the run's own rule (:func:`~geco_tf.training.run.select_best`) was met, the score,
    the epochs trained and the training minutes."""
    run = RunDir(run_dir)
    try:
        metrics = json.loads(run.metrics.read_text())
    except FileNotFoundError:
        raise UserError(f"{run.metrics}: the trial's run has no metrics.json (not finished)") from None
    config = run.read_config()
    settings = config.get("config") or config.get("options") or {}
    history = run.read_history()
    kept_epoch = int(metrics["best_epoch"])
    kept = next((r for r in history if int(r["epoch"]) == kept_epoch), None)
    if kept is None:
        raise UserError(f"{run.history}: no row for the kept epoch {kept_epoch}")
    ssim_target = float(metrics.get("ssim_target", settings.get("ssim_target")))
    learnt = metrics.get("learnt_accuracy")
    if learnt is None:
        learnt = learnt_accuracy(len(config["classes"]))
    chosen, met = select_best(history, ssim_target, int(settings.get("warmup_steps", 0)), learnt)
    met = bool(met and chosen is not None and int(chosen["epoch"]) == kept_epoch)
    leakage = validation_leakage(kept)
    ssim = kept.get("val_ssim")
    return {
        "val_accuracy_cotrained": kept.get("val_accuracy_cotrained"),
        "val_leakage": leakage,
        "val_ssim": ssim,
        "ssim_target": ssim_target,
        "rule_met": met,
        "score": trial_score(leakage, ssim, met),
        "kept_epoch": kept_epoch,
        "epochs": int(metrics.get("epochs_trained", len(history))),
        "adversarial_epochs": metrics.get("adversarial_epochs"),  # epochs after the warm-up
        "train_minutes": float(metrics.get("training_seconds", 0.0)) / 60.0,
    }


# -- settings -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepSettings:
    """What defines a sweep (``SWEEP/sweep.json``; a resumed sweep must keep all of it)."""

    data: str
    target: str
    params: tuple[str, ...] = PARAMS
    values: int = VALUES
    step: float = STEP_DECADES
    trial_budget: float = TRIAL_BUDGET_MINUTES
    fixed: dict = field(default_factory=dict)

    def centres(self) -> dict[str, float]:
        """Each swept variable's centre: its value in ``fixed`` if given, else its default."""
        defaults = training_defaults()
        return {p: float(self.fixed.get(p, defaults[p])) for p in self.params}

    def grids(self) -> dict[str, list[float]]:
        return {p: value_grid(c, self.values, self.step) for p, c in self.centres().items()}

    def trial_options(self, values: dict) -> dict:
        """The ``train_geco`` settings of one trial: ``fixed``, the trial's values of the swept
        variables, and the time budget."""
        return {**self.fixed, **values, "time_budget_minutes": float(self.trial_budget)}

    def planned_trials(self) -> int:
        """How many trials the whole sweep runs (a later variable's centre trial is the earlier
        variable's best one when the centre is on the grid, i.e. for an odd number of values)."""
        shared = 1 if self.values % 2 else 0
        return self.values + (len(self.params) - 1) * (self.values - shared)

    def to_json(self) -> dict:
        out = asdict(self)
        out["params"] = list(self.params)
        return out

    @classmethod
    def from_json(cls, obj: dict) -> SweepSettings:
        return cls(**{**obj, "params": tuple(obj["params"])})


def check_settings(settings: SweepSettings) -> None:
    """Refuse settings the sweep cannot run, with one line naming the option."""
    defaults = training_defaults()
    if settings.target not in TARGETS:
        raise UserError(f"--target {settings.target!r}: choose one of {', '.join(TARGETS)}")
    if not settings.params:
        raise UserError("--params: name at least one setting to sweep")
    if len(set(settings.params)) != len(settings.params):
        raise UserError(f"--params {','.join(settings.params)}: a setting is named twice")
    for name in settings.params:
        default = defaults.get(name)
        if name not in defaults:
            raise UserError(f"--params: {name!r} is not a training setting")
        if isinstance(default, bool) or not isinstance(default, (int, float)):
            raise UserError(f"--params: {name!r} is not a numeric setting (default {default!r})")
    unknown = sorted(set(settings.fixed) - set(defaults))
    if unknown:
        raise UserError(f"--set: unknown training setting(s) {', '.join(unknown)}")
    owned = sorted(set(settings.fixed) & set(SWEEP_OWNED))
    if owned:
        raise UserError(f"--set {owned[0]}: the sweep sets it on every trial (use --trial-budget)")
    if not settings.trial_budget > 0:
        raise UserError(f"--trial-budget {settings.trial_budget}: use a positive number of minutes")
    # every trial's settings are a valid training config (types, ranges), before any trial runs
    base = TrainConfig().replace(_source="--set", **settings.fixed)
    for name, grid in settings.grids().items():
        for value in (grid[0], grid[-1]):
            base.replace(_source=f"--params {name} (value {value:g})", **{name: value})


def trial_settings(config_file: str | Path | None, assignments: list[str] | tuple[str, ...] = ()) -> dict:
    """The training settings every trial shares: a TOML file's (``--config``, any subset of the
    training config's fields; e.g. a ``best.toml`` or a preset) with ``--set`` over them."""
    values = read_toml(config_file) if config_file is not None else {}
    return {**values, **parse_assignments(assignments)}


# -- KerasTuner: the oracle and the tuner -----------------------------------------------------
class OneAtATimeOracle(keras_tuner.Oracle):
    """The paper's sweep as a KerasTuner oracle: variable by variable, each over its grid, with
    the earlier variables fixed at their best value and the later ones at their centre.

    Everything it decides follows from the trials it has saved (``SWEEP/tuner/trial_*/``), so a
    reloaded oracle continues where the last one stopped. While a variable's last trials are
    still running elsewhere (distributed mode) it answers IDLE: the next variable's values
    depend on them.
    """

    def __init__(self, params: tuple[str, ...], grids: dict[str, list[float]], centres: dict[str, float], **kwargs):
        hp = keras_tuner.HyperParameters()
        for name in params:
            hp.Choice(name, sorted(set(grids[name]) | {centres[name]}), default=centres[name])
        max_trials = len(params) * max(len(g) for g in grids.values())
        super().__init__(
            objective=keras_tuner.Objective(_OBJECTIVE, direction="min"),
            max_trials=max_trials,
            hyperparameters=hp,
            allow_new_entries=False,
            tune_new_entries=False,
            max_consecutive_failed_trials=max_trials + 1,  # a diverging value is a result, not a reason to stop
            **kwargs,
        )
        self.params = tuple(params)
        self.grids = {k: list(v) for k, v in grids.items()}
        self.centres = dict(centres)

    def stages(self) -> list[dict]:
        """The sweep so far: one dict per variable reached (``param``, ``entries`` = [(value,
        the trial's values, its trial or None)], ``done``, ``best``); it stops at the first
        variable not finished."""
        fixed = dict(self.centres)
        out = []
        for name in self.params:
            entries = []
            for value in self.grids[name]:
                values = {**fixed, name: value}
                entries.append((value, values, self._trial_with(values)))
            done = all(t is not None and t.status in (_COMPLETED, _FAILED) for _, _, t in entries)
            stage = {"param": name, "entries": entries, "done": done, "best": None}
            out.append(stage)
            if not done:
                break
            stage["best"] = self._best_value(name, entries)
            fixed[name] = stage["best"]
        return out

    def best_values(self) -> dict[str, float]:
        """The configuration the sweep has settled on so far (centres where not yet swept)."""
        fixed = dict(self.centres)
        for stage in self.stages():
            if stage["done"]:
                fixed[stage["param"]] = stage["best"]
        return fixed

    def populate_space(self, trial_id: str) -> dict:
        stages = self.stages()
        last = stages[-1]
        for _, values, trial in last["entries"]:
            if trial is None:
                return {"status": _RUNNING, "values": values}
        if not last["done"]:
            return {"status": _IDLE, "values": None}
        return {"status": _STOPPED, "values": None}

    def _trial_with(self, values: dict):
        for trial in self.trials.values():
            if trial.hyperparameters.values == values:
                return trial
        return None

    def _best_value(self, name: str, entries: list) -> float:
        """The value with the lowest score (ties: nearer the centre in log space, then the
        smaller); the centre when every trial of the variable failed."""
        scored = [(t.score, v) for v, _, t in entries if t.status == _COMPLETED and t.score is not None]
        if not scored:
            return self.centres[name]
        centre = self.centres[name]
        return min(scored, key=lambda sv: (sv[0], abs(math.log10(sv[1] / centre)), sv[1]))[1]


class _StopSweep(Exception):
    """Raised after ``max_trials`` trials of this call (the sweep is resumable)."""


class SweepTuner(keras_tuner.Tuner):
    """Runs one sweep trial: ``run_trial`` builds the trial's training settings from its
    hyper-parameter values and trains them with :func:`train_geco` in ``SWEEP/trials/<id>/``,
    returning the score (:func:`trial_outcome`) and the numbers behind it."""

    def __init__(self, oracle, settings: SweepSettings, sweep_dir: Path, progress: Progress,
                 max_trials: int | None = None, **kwargs) -> None:
        super().__init__(oracle=oracle, hypermodel=None, **kwargs)
        self.settings = settings
        self.sweep_dir = Path(sweep_dir)
        self.progress = progress
        self.max_new_trials = max_trials
        self.trials_run = 0
        self.user_error: UserError | None = None
        self.bar = None
        self.number_first = 1
        self.number_total = settings.planned_trials()
        self.trials_started = 0
        self._asked_without_trial = False

    def run_trial(self, trial, *args, **kwargs) -> dict:
        values = dict(trial.hyperparameters.values)
        run_dir = self.sweep_dir / "trials" / trial.trial_id
        started = time.monotonic()
        if (run_dir / "metrics.json").exists():  # trained, but the sweep stopped before recording it
            outcome = trial_outcome(run_dir)
            minutes = outcome["train_minutes"]
        else:
            if run_dir.exists():  # cut off mid-training: restart it, so every trial had one budget
                shutil.rmtree(run_dir)
            keras.utils.clear_session()
            try:
                train_geco(
                    self.settings.data, run_dir, target=self.settings.target, progress=False,
                    **self.settings.trial_options(values),
                )
            except UserError as exc:  # the user's to fix, not a bad value: stop the sweep
                self.user_error = exc
                raise keras_tuner.errors.FatalError(str(exc)) from exc
            outcome = trial_outcome(run_dir)
            minutes = (time.monotonic() - started) / 60.0
        metrics = {k: outcome[k] for k in RESULT_COLUMNS if k not in ("minutes", "rule_met")}
        metrics.update(rule_met=float(outcome["rule_met"]), minutes=minutes)
        return {k: float(v) for k, v in metrics.items() if v is not None}

    def pre_create_trial(self) -> None:
        # Two requests without a trial in between: the chief said IDLE (a variable's last
        # trials run elsewhere); wait before asking again.
        if self._asked_without_trial:
            time.sleep(IDLE_WAIT_SECONDS)
        self._asked_without_trial = True

    def on_trial_begin(self, trial) -> None:
        self._asked_without_trial = False
        super().on_trial_begin(trial)
        values = trial.hyperparameters.values
        described = ", ".join(f"{p}={values[p]:g}" for p in self.settings.params)
        number = self.number_first + self.trials_started
        self.trials_started += 1
        counted = "" if _is_worker() else f"{number} of {self.number_total} "  # a worker sees only its own
        self.progress.step(f"trial {counted}(id {trial.trial_id}): {described}")

    def on_trial_end(self, trial) -> None:
        super().on_trial_end(trial)
        record = self.oracle.get_trial(trial.trial_id)
        if record.status == _COMPLETED:
            m = {k: record.metrics.get_last_value(k) for k in ("score", "val_accuracy_cotrained", "val_ssim",
                                                                "epochs", "minutes")}
            self.progress.note(
                f"trial {trial.trial_id}: score {m['score']:.3f} (validation co-trained accuracy "
                f"{_fmt(m['val_accuracy_cotrained'], 3)}, SSIM {_fmt(m['val_ssim'], 4)}, "
                f"{_fmt(m['epochs'], 0)} epochs, {m['minutes']:.1f} min)"
            )
        else:
            reason = (record.message or "").strip().splitlines()
            self.progress.note(f"trial {trial.trial_id}: {record.status}" + (f" ({reason[-1]})" if reason else ""))
        if self.bar is not None:
            self.bar.update(1)
        if not _is_worker():
            write_results(self.sweep_dir, result_rows(self.oracle, self.settings), self.settings)
        self.trials_run += 1
        if self.max_new_trials is not None and self.trials_run >= self.max_new_trials:
            raise _StopSweep


# -- the sweep --------------------------------------------------------------------------------
def run_sweep(
    data_dir: str | Path,
    out_dir: str | Path,
    target: str | None = None,
    params: tuple[str, ...] | list[str] | None = None,
    values: int | None = None,
    step: float | None = None,
    trial_budget: float | None = None,
    fixed: dict | None = None,
    resume: bool = False,
    max_trials: int | None = None,
    progress: Progress = QUIET,
) -> dict:
    """Run (or, with ``resume``, continue) the sweep in ``out_dir`` (layout: ``docs/sweep.md``).

    ``None`` arguments take the defaults (:data:`PARAMS`, :data:`VALUES`, :data:`STEP_DECADES`,
    :data:`TRIAL_BUDGET_MINUTES`, target ``manufacturer``) or, when resuming, the stored
    sweep's; a resumed sweep refuses a setting that differs from the stored one. ``fixed``
    holds training settings given to every trial. ``max_trials`` stops after that many trials
    of this call. Returns a summary (``complete``, ``trials``, ``best``, ``best_score``, paths).
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: --out exists and is a file, not a directory")
    given = {
        "data": None if data_dir is None else str(Path(data_dir).resolve()),
        "target": target,
        "params": None if params is None else tuple(params),
        "values": values,
        "step": step,
        "trial_budget": trial_budget,
        "fixed": fixed or None,
    }
    stored_path = out / "sweep.json"
    if resume and not _is_worker():
        if not stored_path.exists():
            raise UserError(f"{stored_path}: no sweep to resume here")
        settings = SweepSettings.from_json(json.loads(stored_path.read_text()))
        for key, value in given.items():
            if value is not None and value != getattr(settings, key):
                raise UserError(
                    f"--resume: {key} is {getattr(settings, key)!r} in {stored_path}, not {value!r}; "
                    "a resumed sweep keeps its settings (choose a new --out for new ones)"
                )
    else:
        if not _is_worker() and (stored_path.exists() or (out / "tuner").exists()):
            raise UserError(f"{out}: already holds a sweep; use --resume to continue it or choose a new --out")
        if given["data"] is None:
            raise UserError("--data: the dataset to sweep on is required")
        defaults = SweepSettings(data=given["data"], target="manufacturer")
        settings = SweepSettings(**{k: (v if v is not None else getattr(defaults, k)) for k, v in given.items()})
    check_settings(settings)
    if not _is_worker():
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(stored_path, settings.to_json())

    oracle = OneAtATimeOracle(settings.params, settings.grids(), settings.centres())
    sink = open(os.devnull, "w") if progress.quiet else sys.stderr  # KerasTuner prints to stdout
    tf_logger = logging.getLogger("tensorflow")
    tf_logger.addFilter(_drop_retracing_warning)
    try:
        with contextlib.redirect_stdout(sink):
            tuner = SweepTuner(
                oracle, settings, out, progress, max_trials=max_trials,
                directory=str(out), project_name="tuner", overwrite=False,
            )
            oracle.verbose = 0
            done = _finished_trials(oracle) if not _is_worker() else 0
            tuner.number_first = done + 1  # numbers continue where a stored sweep stopped
            stopped = False
            with progress.bar(total=settings.planned_trials(), desc="sweep trials") as bar:
                bar.update(done)
                tuner.bar = bar
                try:
                    tuner.search()
                except _StopSweep:
                    stopped = True
                except keras_tuner.errors.FatalError:
                    if tuner.user_error is not None:
                        raise tuner.user_error from None
                    raise
    finally:
        tf_logger.removeFilter(_drop_retracing_warning)
        if sink is not sys.stderr:
            sink.close()
    if _is_worker():
        return {"complete": None, "trials": tuner.trials_run, "worker": True}
    return write_outputs(out, oracle, settings, complete=not stopped)


def _drop_retracing_warning(record: logging.LogRecord) -> bool:
    """Every trial builds new networks and so new ``tf.function`` objects; TensorFlow's warning that
    they were traced again says nothing about the sweep."""
    return "triggered tf.function retracing" not in record.getMessage()


def _finished_trials(oracle: keras_tuner.Oracle) -> int:
    return sum(1 for t in oracle.trials.values() if t.status in (_COMPLETED, _FAILED))


def _is_worker() -> bool:
    """True in a KerasTuner worker process (distributed mode, not the chief)."""
    return "KERASTUNER_ORACLE_IP" in os.environ and "chief" not in os.environ.get("KERASTUNER_TUNER_ID", "")


# -- outputs ----------------------------------------------------------------------------------
def result_rows(oracle: OneAtATimeOracle, settings: SweepSettings) -> list[dict]:
    """One row per trial (``SWEEP/results.csv``), in trial order: ``trial``, ``varied`` (the
    variable(s) whose sweep the trial belongs to, joined by ``+``), ``status``, the swept
    variables, then :data:`RESULT_COLUMNS`."""
    varied: dict[str, list[str]] = {}
    for stage in oracle.stages():
        for _, _, trial in stage["entries"]:
            if trial is not None:
                varied.setdefault(trial.trial_id, []).append(stage["param"])
    rows = []
    for trial_id in sorted(oracle.trials):
        trial = oracle.trials[trial_id]
        row = {"trial": trial_id, "varied": "+".join(varied.get(trial_id, [])), "status": trial.status}
        row.update({p: trial.hyperparameters.values.get(p) for p in settings.params})
        for key in RESULT_COLUMNS:
            value = trial.metrics.get_last_value(key) if trial.metrics.exists(key) else None
            if key in ("rule_met",) and value is not None:
                value = bool(value)
            elif key in ("kept_epoch", "epochs", "adversarial_epochs") and value is not None:
                value = int(value)
            row[key] = value
        rows.append(row)
    return rows


def budget_warnings(rows: list[dict]) -> list[str]:
    """What makes the finished trials' scores unfit to compare, said plainly.

    A trial that never left the generator's warm-up (``adversarial_epochs`` 0) was scored on an
    untrained game, whatever its value; and when the time budget lets trials train different
    numbers of epochs, that difference can decide their ranking. The real sweep on the built-in
    data on 2 CPU cores hit both (docs/results.md): 5-minute trials trained 1-3 epochs, and only
    3-epoch trials got past the 100-step warm-up.
    """
    done = [r for r in rows if r.get("status") == _COMPLETED]
    warnings = []
    idle = [r["trial"] for r in done if r.get("adversarial_epochs") == 0]
    if idle:
        warnings.append(
            f"{len(idle)} of {len(done)} trials ended inside the generator's warm-up (trials {', '.join(idle)}): "
            "their scores do not judge their values; give each trial more time (--trial-budget)"
        )
    epochs = sorted({r["epochs"] for r in done if r.get("epochs") is not None})
    if len(epochs) > 1:
        warnings.append(
            f"trials trained {epochs[0]} to {epochs[-1]} epochs: the time budget, not only the value, ranks them; "
            "for equal epochs use --set epochs=N with a --trial-budget long enough for N"
        )
    return warnings


def write_results(out: Path, rows: list[dict], settings: SweepSettings) -> Path:
    """``SWEEP/results.csv`` (atomically) from :func:`result_rows`."""
    columns = ["trial", "varied", "status", *settings.params, *RESULT_COLUMNS]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv(row.get(k)) for k in columns})
    path = out / "results.csv"
    write_text_atomic(path, buf.getvalue())
    return path


def write_outputs(out: Path, oracle: OneAtATimeOracle, settings: SweepSettings, complete: bool) -> dict:
    """``results.csv`` always; ``sweep.png`` and ``best.toml`` once every variable is swept."""
    rows = result_rows(oracle, settings)
    results = write_results(out, rows, settings)
    stages = oracle.stages()
    complete = complete and len(stages) == len(settings.params) and stages[-1]["done"]
    summary = {
        "complete": complete,
        "trials": _finished_trials(oracle),
        "planned_trials": settings.planned_trials(),
        "results": str(results),
        "best": None,
        "best_score": None,
        "best_trial": None,
        "warnings": budget_warnings(rows),
    }
    if not complete:
        return summary
    best = oracle.best_values()
    best_trial = oracle._trial_with(best)
    summary.update(best=best, best_trial=best_trial.trial_id if best_trial else None,
                   best_score=float(best_trial.score) if best_trial else None)
    summary["plot"] = str(plot_sweep(out / "sweep.png", oracle, settings))
    header = [
        "geco-tf sweep: the best configuration found (results.csv"
        + (f", trial {summary['best_trial']}, score {summary['best_score']:.4f}" if best_trial else "") + ")",
        f"target {settings.target}; {settings.values} values per variable, {settings.step:g} decades apart; "
        f"{settings.trial_budget:g} min per trial",
        f"train with it: geco-tf train --config {out / 'best.toml'} --data DATA --target {settings.target} --out RUN",
    ]
    fixed = {k: v for k, v in settings.fixed.items() if k not in best}
    text = toml_text(best, header)
    if fixed:
        text += "\n" + toml_text(fixed, ["fixed for every trial of the sweep (--set)"])
    write_toml(out / "best.toml", text)
    summary["config"] = str(out / "best.toml")
    write_json_atomic(out / "summary.json", summary)
    return summary


def plot_sweep(path: Path, oracle: OneAtATimeOracle, settings: SweepSettings) -> Path:
    """``SWEEP/sweep.png``: score against value (log x), one panel per variable, the chosen
    value ringed, the centre dashed; scores above 1 are trials whose kept epoch missed the
    run's rule."""
    stages = oracle.stages()
    fig, axes = plt.subplots(1, len(stages), figsize=(4.2 * len(stages), 3.6), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        points = [(v, t.score) for v, _, t in stage["entries"] if t is not None and t.score is not None]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, "o-", color="tab:blue")
        if stage["best"] is not None:
            best = [s for v, s in points if v == stage["best"]]
            if best:
                ax.plot([stage["best"]], best, "o", ms=14, mfc="none", mec="tab:red", label=f"chosen {stage['best']:g}")
        ax.axvline(oracle.centres[stage["param"]], ls="--", color="grey", lw=1, label="centre")
        ax.axhline(1.0, ls=":", color="grey", lw=1)
        ax.set_xscale("log")
        grid = oracle.grids[stage["param"]]
        ax.set_xticks(grid, [f"{v:g}" for v in grid], rotation=45, fontsize=7)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(stage["param"])
        ax.set_ylabel("score (validation; lower is better)")
        others = ", ".join(f"{k}={v:g}" for k, v in stage["entries"][0][1].items() if k != stage["param"])
        ax.set_title(f"{stage['param']} ({others})", fontsize=8)
        ax.legend(fontsize=7)
    fig.suptitle(f"geco-tf sweep: {settings.target}, {settings.trial_budget:g} min per trial", fontsize=9)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path


# -- TOML ---------------------------------------------------------------------------------------
def toml_text(values: dict, comments: list[str] | tuple[str, ...] = ()) -> str:
    """Top-level ``key = value`` lines (the standard library reads TOML but cannot write it):
    booleans, integers, floats (``repr``: round-trips exactly; ``inf``/``nan`` spelt as TOML
    does) and strings; ``None`` is left out (TOML has no null). Comments go first as ``#``
    lines. Raises ``ValueError`` for anything else, or if the text does not read back equal."""
    lines = [f"# {c}" for c in comments]
    kept = {}
    for key, value in values.items():
        if value is None:
            continue
        if not key.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"{key!r} is not a bare TOML key")
        lines.append(f"{key} = {_toml_value(value)}")
        kept[key] = value
    text = "\n".join(lines) + "\n"
    parsed = tomllib.loads(text)
    if any(not _same(parsed[k], v) for k, v in kept.items()):
        raise ValueError(f"TOML does not read back as written: {text!r}")
    return text


def write_toml(path: Path, text: str) -> None:
    """Write TOML ``text`` atomically after checking that it parses."""
    tomllib.loads(text)
    write_text_atomic(path, text)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        text = repr(value)
        return text if any(c in text for c in ".eE") else text + ".0"
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: same escapes
    raise ValueError(f"cannot write {value!r} ({type(value).__name__}) as a TOML value")


def _same(a, b) -> bool:
    if isinstance(b, float) and math.isnan(b):
        return isinstance(a, float) and math.isnan(a)
    return type(a) is type(b) and a == b


# -- small helpers ------------------------------------------------------------------------------
def _round3(x: float) -> float:
    return float(f"{x:.3g}")


def _fmt(value, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _csv(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
