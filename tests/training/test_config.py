"""``TrainConfig``: one place for every training setting, its presets, files and overrides."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from geco_tf.errors import UserError
from geco_tf.models.generators import GENERATORS, UNetGenerator
from geco_tf.training import config as cfg
from geco_tf.training.config import TrainConfig, preset


def test_every_field_has_a_one_line_help():
    for f in dataclasses.fields(TrainConfig):
        text = f.metadata.get("help", "")
        assert text and "\n" not in text, f.name


def test_the_default_preset_is_the_dataclass_defaults():
    """default.toml spells out every default (a file a user can copy); it must not drift."""
    assert preset("default") == TrainConfig()
    written = cfg.preset_path("default").read_text()
    for name in (f.name for f in dataclasses.fields(TrainConfig) if f.default is not None):
        assert f"\n{name} = " in written, name


def test_the_paper_preset_is_section_3_1_as_written():
    paper = preset("paper")
    assert (paper.generator, paper.classifier, paper.three_player) == ("unet", "dds", False)
    assert paper.beta == 0.02 and paper.beta_scaling == "area"  # 0.02 at 512 px, scaled by area
    assert paper.g_lr == paper.c_lr == 5e-4 and paper.epochs == 15 and paper.critic_steps == 1
    # nothing this project added
    assert not paper.spectral_adversary and paper.pool_size == 0 and paper.warmup_steps == 0
    assert paper.label_smoothing == 0.0 and paper.output_band == "off" and not paper.input_skip
    assert paper.selection_probe == "none" and paper.time_budget_minutes == 0
    with pytest.raises(UserError, match="--preset"):
        preset("fast")


def test_the_time_budget_is_off_by_default():
    assert TrainConfig().time_budget_minutes == 0


def test_a_toml_file_sets_any_subset(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('g_lr = 5e-4\nthree_player = true\noutput_band = [0.8, 0.85]\nepochs = 3\n')
    config = TrainConfig.from_toml(path)
    assert config == TrainConfig(g_lr=5e-4, three_player=True, output_band="0.8,0.85", epochs=3)
    # over a preset: only the file's keys change
    over = preset("paper").merge_toml(path)
    assert over.beta == 0.02 and over.g_lr == 5e-4 and over.epochs == 3


@pytest.mark.parametrize(
    "text, message",
    [
        ("fidelity = 'ssim'\n", "unknown setting(s) fidelity"),
        ("epochs = 'many'\n", "epochs = 'many' is not an integer"),
        ("jit = 1\n", "jit = 1 is not true or false"),
        ("generator = 'gan'\n", "generator = 'gan': choose one of"),
        ("epochs = \n", "not valid TOML"),
    ],
)
def test_a_bad_toml_file_names_the_file_and_the_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        TrainConfig.from_toml(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_set_parses_each_value_to_its_fields_type():
    config = TrainConfig().with_overrides(
        ["jit=true", "g_lr=5e-4", "epochs=3", "beta=1", "output_band=0.8,0.85", "selection_probe=none",
         "steps_per_epoch=7", "three-player=false"]
    )
    assert config.jit is True and config.g_lr == 5e-4 and config.epochs == 3 and config.beta == 1.0
    assert isinstance(config.beta, float) and isinstance(config.epochs, int)
    assert config.output_band == "0.8,0.85" and config.selection_probe == "none" and config.steps_per_epoch == 7
    assert TrainConfig().with_overrides(["epochs=3", "epochs=4"]).epochs == 4  # the last one wins
    for bad, message in [("nope=1", "unknown setting(s) nope"), ("epochs=2.5", "not an integer"),
                         ("epochs", "use key=value"), ("critic_steps=0", "must be >= 1")]:
        with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
            TrainConfig().with_overrides([bad])


def test_a_config_round_trips_through_its_dict_and_toml(tmp_path):
    config = preset("paper").replace(epochs=3, steps_per_epoch=5)
    assert TrainConfig.from_dict(config.to_dict()) == config
    (tmp_path / "c.toml").write_text(config.to_toml())
    assert TrainConfig.from_toml(tmp_path / "c.toml") == config
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 4


def test_the_field_names_of_the_old_defaults_remain():
    """Other code (a KerasTuner sweep, the demo, experiments) sets these by name."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    assert {"g_lr", "c_lr", "beta", "time_budget_minutes", "epochs", "warmup_steps", "pool_size",
            "base_filters", "depth", "batch_size", "seed", "selection_probe", "ssim_target"} <= names
    assert not names & set(cfg.REMOVED_SETTINGS)


def test_the_choices_are_the_librarys():
    from geco_tf.models.classifiers import CLASSIFIERS
    from geco_tf.training.distribute import STRATEGIES
    from geco_tf.training.fresh_probe import SELECTION_PROBES
    from geco_tf.training.precision import PRECISIONS

    assert cfg.GENERATORS == tuple(GENERATORS) and cfg.CLASSIFIERS == tuple(CLASSIFIERS)
    assert cfg.PRECISIONS == PRECISIONS and cfg.STRATEGIES == STRATEGIES
    assert cfg.SELECTION_PROBES == SELECTION_PROBES


def test_the_unets_defaults_are_the_trainers():
    """``UNetGenerator()`` is the generator ``geco-tf train`` builds (bar the dataset's band)."""
    defaults = {k: p.default for k, p in inspect.signature(UNetGenerator.__init__).parameters.items()}
    config = TrainConfig()
    assert defaults["input_skip"] is config.input_skip
    assert defaults["base_filters"] == config.base_filters and defaults["depth"] == config.depth
