"""``geco-tf train``: a short help generated from TrainConfig, presets, config files and --set."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner
from geco_tf_cli import train as cli_train
from geco_tf_cli.main import cli

from geco_tf.training.config import TrainConfig, config_fields
from geco_tf.training.train import RESUMABLE_OVERRIDES

#: Options besides --config/--preset/--set/--help (the issue's bound).
MAX_OPTIONS = 16


def _invoke(*args: str):
    return CliRunner().invoke(cli, ["train", *args])


def _options_in_help() -> list[str]:
    text = _invoke("--help").output
    options = text.split("Options:")[1].split("Examples:")[0]
    return re.findall(r"^  (--[a-z-]+)", options, flags=re.M)


def test_help_lists_at_most_16_options():
    shown = _options_in_help()
    others = [o for o in shown if o not in ("--config", "--preset", "--set", "--help")]
    assert len(others) <= MAX_OPTIONS, others
    assert {"--data", "--target", "--out", "--resume", "--generator", "--epochs", "--time-budget", "--quiet",
            "--three-player", "--no-mse", "--config", "--preset", "--set"} <= set(shown)


def test_each_options_default_and_help_come_from_the_dataclass():
    command = cli_train.command
    for name, flag in cli_train.OPTIONS.items():
        field = config_fields()[name]
        option = next(p for p in command.params if p.name == name)
        assert option.opts == [flag]
        assert option.default is None  # not given: the preset's / file's value stands
        assert option.help.startswith(field.metadata["help"])
        assert f"[default: {cli_train.show_default(field.default)}]" in option.help
        if "choices" in field.metadata:
            assert tuple(option.type.choices) == field.metadata["choices"]
    # every other field is named in the epilog, reachable with --set / --config
    epilog = " ".join(command.epilog.split())
    for name in config_fields():
        assert name in cli_train.OPTIONS or name in epilog, name
    assert cli_train.RESUMABLE == RESUMABLE_OVERRIDES


def test_precedence_is_preset_then_file_then_options_then_set(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text("epochs = 3\nbeta = 0.5\ng_lr = 1e-4\n")
    config = cli_train.build_config("paper", str(path), {"epochs": 4, "beta": None}, ("epochs=5",))
    assert config.epochs == 5  # --set over the option over the file
    assert config.beta == 0.5 and config.g_lr == 1e-4  # the file over the preset
    assert config.c_lr == 5e-4 and not config.spectral_adversary  # the preset elsewhere
    assert cli_train.build_config(None, None, {}, ()) == TrainConfig()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "fidelity=ssim"], "unknown setting(s) fidelity"),
        (["--set", "jit=maybe"], "jit = 'maybe' is not true or false"),
        (["--set", "epochs"], "use key=value"),
        (["--preset", "fast"], "--preset"),
        (["--config", "missing.toml"], "missing.toml: cannot read"),
        (["--set", "seed=1", "--resume"], "only --epochs and --time-budget"),
    ],
)
def test_bad_settings_exit_2_with_one_line_before_training(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = _invoke("--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), *args)
    assert result.exit_code == 2, (result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_preset_paper_with_a_config_file_trains_and_records_its_config(tiny_data, tmp_path):
    """Table 1's reproduction command on a tiny run: config.json holds the paper's settings with
    the file's and --set's on top, and the run is the two-player game with nothing added."""
    path = tmp_path / "tiny.toml"
    path.write_text("base_filters = 4\ndepth = 2\nclassifier = 'maxpool'\n")
    out = tmp_path / "run"
    result = _invoke("--data", str(tiny_data), "--out", str(out), "--preset", "paper", "--config", str(path),
                     "--epochs", "1", "--batch-size", "8", "--set", "steps_per_epoch=2", "--quiet")
    assert result.exit_code == 0, (result.output, result.exception)
    assert "best epoch 1 of 1" in result.output
    assert "epoch 1:" not in result.stderr and "epoch 1/1" not in result.stderr  # --quiet: no line, no bar
    stored = json.loads((out / "config.json").read_text())
    config = TrainConfig.from_stored(stored)
    assert config.beta == 0.02 and config.g_lr == config.c_lr == 5e-4 and config.critic_steps == 1
    assert (config.base_filters, config.depth, config.classifier, config.epochs) == (4, 2, "maxpool", 1)
    assert stored["resolved"]["beta_effective"] == pytest.approx(0.02 * 512**2 / 32**2)
    assert stored["resolved"]["output_band"] is None and stored["resolved"]["discriminator_config"] is None
    history = (out / "history.csv").read_text().splitlines()
    assert len(history) == 2 and (out / "generator.keras").is_file()
    assert not (out / "spectral_classifier.keras").exists()  # no spectral adversary in the paper
