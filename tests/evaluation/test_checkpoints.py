"""``geco-tf evaluate --epoch N``: another epoch of a run, restored from its checkpoint."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from geco_tf_cli.main import cli

from geco_tf.errors import UserError
from geco_tf.evaluation.checkpoints import checkpoint_epochs, restore_epoch
from geco_tf.training.train import train_geco


@pytest.mark.slow
def test_evaluate_another_epoch_restores_that_epochs_generator(tiny_data, tmp_path):
    """Epochs 1 and 2 of a run with a large learning rate give different images; restoring each
    gives its own generator; ``evaluate --epoch 1`` reports epoch 1, and an epoch without a
    checkpoint is one clear line with exit code 2."""
    run = tmp_path / "run"
    train_geco(tiny_data, run, epochs=2, progress=False, ssim_target=0.0, g_lr=0.05, base_filters=4, depth=2,
               classifier="maxpool", batch_size=8, warmup_steps=0, pool_size=0, spectral_adversary=False,
               selection_probe="none")
    assert checkpoint_epochs(run) == [1, 2]
    x = np.tanh(np.random.default_rng(0).standard_normal((2, 32, 32, 1))).astype(np.float32)
    generator = keras.models.load_model(run / "generator.keras", compile=False)
    restore_epoch(run, 1, generator)
    first = np.asarray(generator(x))
    restore_epoch(run, 2, generator)
    second = np.asarray(generator(x))
    assert np.abs(first - second).max() > 1e-4
    with pytest.raises(UserError, match="no checkpoint of epoch 9 .checkpoints: epochs 1-2"):
        restore_epoch(run, 9, generator)

    args = ["evaluate", "--run", str(run), "--audit-epochs", "1", "--probe-epochs", "1", "--sigmas", "1",
            "--baselines", "identity", "--quiet"]
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "report"), "--epoch", "1"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["epoch"] == 1 and "epoch 1" in result.output
    missing = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "other"), "--epoch", "9"])
    assert missing.exit_code == 2 and "no checkpoint of epoch 9" in missing.output
    assert not (tmp_path / "other" / "metrics.json").exists()
