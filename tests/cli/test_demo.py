"""``geco-tf demo --quick``: the whole chain (synth, baseline, train, evaluate) runs and ends
with the headline table and a report. One tiny run; the numbers themselves prove nothing."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from geco_tf_cli.main import cli


@pytest.mark.benchmark  # 40-70 s on 2 cores: out of the 8-minute suite; run with python -m pytest -m benchmark
def test_quick_demo_runs_the_chain_and_prints_the_table(tmp_path) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(cli, ["demo", "--out", str(out), "--quick"])
    assert result.exit_code == 0, result.output
    for k, stage in enumerate(("synth", "baseline", "train", "evaluate"), start=1):
        assert f"[{k}/4] [demo] {stage}" in result.output  # the step lines (stderr)
    assert "[9/9] per modality, figures" in result.output  # evaluate's own steps
    assert "accuracy_audit (fresh DDS-style, G(X))" in result.output
    assert "VERDICT:" in result.output and "not a result" in result.output
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    # accuracy_original came from the demo's own baseline run, not the audit's stand-in.
    assert metrics["accuracy_original_source"].startswith("baseline classifier")
    assert metrics["n_test"] > 0 and metrics["target"] == "manufacturer"
    assert (out / "report" / "index.html").stat().st_size > 50_000  # figures embedded
    assert (out / "geco" / "generator.keras").is_file() and (out / "baseline" / "baseline.keras").is_file()
