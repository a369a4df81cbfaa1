"""``geco-tf reader-study``: the kit is blind and its key right; the scorer is Figure 3.

The scorer tests need no TensorFlow: keys and answers are written here as a study would produce
them. The build tests make a kit from the tiny dataset and a fixed, visibly different edit, so
the key's claims can be checked against the pixels.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from geco_tf_cli.main import cli

from geco_tf.errors import UserError
from geco_tf.evaluation.reader_study.kit import select_slices
from geco_tf.evaluation.reader_study.score import read_answers, read_key, score_answers


def _key(n_pairs: int = 10, n_ratings: int = 20, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    edited = rng.permutation([True] * (n_ratings // 2) + [False] * (n_ratings - n_ratings // 2))
    return {
        "pairs": [{"item": f"p{k:02d}", "original": str(rng.choice(["left", "right"]))} for k in range(1, n_pairs + 1)],
        "ratings": [{"item": f"r{k:02d}", "edited": bool(e)} for k, e in enumerate(edited, start=1)],
    }


def _write_answers(path: Path, rows: list[tuple]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["reader", "section", "item", "answer"])
        w.writerows(rows)
    return path


def _run(*args: str):
    return CliRunner().invoke(cli, list(args), prog_name="geco-tf")


# --- scoring ---------------------------------------------------------------------------------


def test_acceptance_always_same_reader_scores_0_0_n_and_8_7(tmp_path):
    key = _key()
    (tmp_path / "key.json").write_text(json.dumps(key))
    rows = [("rad1", "pair", p["item"], "same") for p in key["pairs"]]
    rows += [("rad1", "rating", r["item"], 7 if r["edited"] else 8) for r in key["ratings"]]
    answers = _write_answers(tmp_path / "answers-rad1.csv", rows)
    result = _run("reader-study", "score", "--key", str(tmp_path / "key.json"), str(answers), "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    reader = summary["readers"]["rad1"]
    assert reader["pairs"] == {"original": 0, "edited": 0, "same": 10}
    assert reader["ratings"]["original_mean"] == 8.0
    assert reader["ratings"]["edited_mean"] == 7.0
    assert reader["ratings"]["n"] == 20
    assert reader["ratings"]["difference"] == 1.0
    assert summary["overall"]["ratings"]["p"] is None  # one reader: no test, and it says why
    assert "two readers" in summary["overall"]["ratings"]["note"]
    assert (tmp_path / "out" / "figure3.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (tmp_path / "out" / "table.txt").read_text()
    assert table in result.output
    assert re.search(r"rad1\s+0\s+0\s+10\s+20\s+8\.00\s+7\.00\s+1\.00 \[1\.00, 1\.00\]", table), table


def test_two_readers_counts_welch_interval_and_paired_t(tmp_path):
    """Reader a prefers the original in every pair; reader b the edit in 3 and no difference in
    the rest. Per-reader mean differences 0.75 and 0.5: t = 0.625 / (0.1768 / sqrt 2) = 5 on 1
    degree of freedom, whose two-sided p is 1 - 2 atan(5) / pi."""
    key = _key(n_pairs=6, n_ratings=8, seed=3)
    side = {p["item"]: p["original"] for p in key["pairs"]}
    other = {"left": "right", "right": "left"}
    rows = [("a", "pair", i, s) for i, s in side.items()]
    rows += [("b", "pair", i, other[s] if k < 3 else "same") for k, (i, s) in enumerate(side.items())]
    a_orig, a_edit, b_orig, b_edit = [7, 8, 9, 8], [7, 7, 8, 7], [5, 5, 6, 4], [5, 4, 5, 4]
    it_o = iter(a_orig), iter(b_orig)
    it_e = iter(a_edit), iter(b_edit)
    for r in key["ratings"]:
        rows.append(("a", "rating", r["item"], next(it_e[0]) if r["edited"] else next(it_o[0])))
        rows.append(("b", "rating", r["item"], next(it_e[1]) if r["edited"] else next(it_o[1])))
    (tmp_path / "key.json").write_text(json.dumps(key))
    _write_answers(tmp_path / "a.csv", [r for r in rows if r[0] == "a"])
    _write_answers(tmp_path / "b.csv", [r for r in rows if r[0] == "b"])
    s = score_answers(tmp_path / "key.json", [tmp_path / "a.csv", tmp_path / "b.csv"], tmp_path / "out")
    assert s["readers"]["a"]["pairs"] == {"original": 6, "edited": 0, "same": 0}
    assert s["readers"]["b"]["pairs"] == {"original": 0, "edited": 3, "same": 3}
    ra = s["readers"]["a"]["ratings"]
    assert (ra["original_mean"], ra["edited_mean"], ra["difference"]) == (8.0, 7.25, 0.75)
    # Welch by hand: variances 2/3 and 1/4 over n = 4 each.
    va, vb = (2 / 3) / 4, 0.25 / 4
    df = (va + vb) ** 2 / (va**2 / 3 + vb**2 / 3)
    from scipy import stats

    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert ra["ci95"] == pytest.approx([0.75 - half, 0.75 + half])
    o = s["overall"]["ratings"]
    assert o["mean_difference"] == pytest.approx((0.75 + 0.5) / 2)
    assert o["t"] == pytest.approx(5.0) and o["df"] == 1
    assert o["p"] == pytest.approx(1 - 2 * math.atan(o["t"]) / math.pi)
    assert s["overall"]["pairs"]["original"] == 6 and s["overall"]["pairs"]["edited"] == 3


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (("x", "pair", "p99", "left"), "unknown pair item 'p99'"),
        (("x", "rating", "r01", "11"), "rating '11' is not an integer from 1 to 10"),
        (("x", "rating", "r01", "0"), "rating '0' is not an integer from 1 to 10"),
        (("x", "rating", "r01", "7.5"), "rating '7.5' is not an integer"),
        (("x", "pair", "p01", "middle"), "pair answer 'middle' is not one of left, right, same"),
        (("x", "slide", "p01", "left"), "section 'slide'"),
        (("", "pair", "p01", "left"), "empty reader name"),
    ],
)
def test_bad_answer_row_is_one_line_naming_file_and_line(tmp_path, row, message):
    (tmp_path / "key.json").write_text(json.dumps(_key()))
    path = _write_answers(tmp_path / "bad.csv", [("x", "pair", "p02", "same"), row])
    result = _run("reader-study", "score", "--key", str(tmp_path / "key.json"), str(path), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    line = result.output.strip()
    assert "\n" not in line and f"{path}, line 3" in line and message in line, line
    assert not (tmp_path / "out" / "summary.json").exists()


def test_duplicates_within_and_across_files_and_bad_header(tmp_path):
    key = read_key(_key_file(tmp_path))
    a = _write_answers(tmp_path / "a.csv", [("x", "pair", "p01", "left"), ("x", "pair", "p01", "right")])
    with pytest.raises(UserError, match=r"a\.csv, line 3: reader 'x' answered pair p01 twice \(first at .*a\.csv, line 2\)"):
        read_answers([a], key)
    b = _write_answers(tmp_path / "b.csv", [("x", "rating", "r01", "5")])
    c = _write_answers(tmp_path / "c.csv", [("x", "rating", "r01", "6")])
    with pytest.raises(UserError, match=r"c\.csv, line 2: reader 'x' answered rating r01 twice"):
        read_answers([b, c], key)
    assert read_answers([b, _write_answers(tmp_path / "d.csv", [("y", "rating", "r01", "6")])], key)["y"]["rating"] == {"r01": 6}
    bad = tmp_path / "h.csv"
    bad.write_text("name,section,item,answer\nx,pair,p01,left\n")
    with pytest.raises(UserError, match=r"h\.csv, line 1: header must be reader,section,item,answer"):
        read_answers([bad], key)


def _key_file(tmp_path: Path) -> Path:
    path = tmp_path / "key.json"
    path.write_text(json.dumps(_key()))
    return path


def test_select_slices_one_per_subject_before_any_twice_and_classes_in_turn():
    rows = [
        {"slice_id": str(100 * c + 10 * s + k), "subject": f"c{c}s{s}", "manufacturer": f"class{c}"}
        for c in range(4) for s in range(3) for k in range(3)
    ]
    rng = np.random.default_rng(0)
    chosen = select_slices(rows, "manufacturer", 12, rng)
    assert len({r["subject"] for r in chosen}) == 12
    assert sorted(r["manufacturer"] for r in chosen) == sorted([f"class{c}" for c in range(4)] * 3)
    chosen = select_slices(rows, "manufacturer", 14, np.random.default_rng(1))
    per_subject = {}
    for r in chosen:
        per_subject[r["subject"]] = per_subject.get(r["subject"], 0) + 1
    assert len(per_subject) == 12 and max(per_subject.values()) == 2
    assert len({r["slice_id"] for r in chosen}) == 14
    with pytest.raises(UserError, match="has 36 slices .* needs 37"):
        select_slices(rows, "manufacturer", 37, rng)


# --- building --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def edit_run(tmp_path_factory, tiny_data):
    """A run whose generator is a fixed blur that also darkens (tanh(0.8 * 3x3 mean)): an edit
    visible in every pixel, so which side holds the original can be read from the pixels. The
    kit treats any saved Keras generator alike; training one would only cost time."""
    import keras

    gen = keras.Sequential([
        keras.Input((None, None, 1)),
        keras.layers.Conv2D(1, 3, padding="same", activation="tanh", use_bias=False,
                            kernel_initializer=keras.initializers.Constant(0.8 / 9)),
    ])
    run = tmp_path_factory.mktemp("reader") / "run"
    run.mkdir()
    gen.save(run / "generator.keras")
    (run / "config.json").write_text(json.dumps({"target": "manufacturer", "data": str(tiny_data), "image_size": 32}))
    return run


def _decode(uri: str) -> tuple[bytes, np.ndarray, dict]:
    from PIL import Image

    assert uri.startswith("data:image/png;base64,")
    raw = base64.b64decode(uri.split(",", 1)[1])
    image = Image.open(io.BytesIO(raw))
    return raw, np.asarray(image), {"mode": image.mode, "size": image.size, "ihdr": raw[8:33]}


def _kit_data(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="kit-data">(.*?)</script>', html, re.S)
    return json.loads(m.group(1))


@pytest.mark.slow
def test_build_kit_is_blind_and_its_key_is_right(tmp_path, edit_run, tiny_data):
    from geco_tf.data.dataset import open_dataset
    from geco_tf.data.pipeline import slice_records
    from geco_tf.evaluation.reader_study.kit import to_uint8

    kit = tmp_path / "kit"
    result = _run("reader-study", "build", "--run", str(edit_run), "--out", str(kit), "--pairs", "4", "--ratings", "6",
                  "--seed", "5", "--quiet")
    assert result.exit_code == 0, result.output
    assert [p.name for p in kit.iterdir()] == ["index.html"]
    key_path = tmp_path / "kit-key.json"  # the default: beside the kit, not in it
    key = json.loads(key_path.read_text())
    html = (kit / "index.html").read_text()

    # Nothing in the page tells the kinds apart: no such words, neutral alt text, no remote fetch.
    assert not re.search(r"original|edited|generated|\bedits?\b", html, re.I)
    assert set(re.findall(r'alt="([^"]*)"', html)) == {"Left image", "Right image", "Image to score"}
    assert not re.search(r'(src|href)="(https?:)?//', html) and "fetch(" not in html and "XMLHttpRequest" not in html
    data = _kit_data(html)
    assert set(data) == {"kit", "pairs", "ratings"}
    assert [p["item"] for p in data["pairs"]] == ["p01", "p02", "p03", "p04"]
    assert [r["item"] for r in data["ratings"]] == [f"r{k:02d}" for k in range(1, 7)]
    assert all(set(p) == {"item", "left", "right"} for p in data["pairs"])
    assert all(set(r) == {"item", "image"} for r in data["ratings"])
    uris = [p[s] for p in data["pairs"] for s in ("left", "right")] + [r["image"] for r in data["ratings"]]
    decoded = [_decode(u) for u in uris]
    # The same encoding for every image: one PNG header (size, bit depth, colour type,
    # compression, filter, interlace), grey 8-bit, and one byte length whatever the content.
    assert len({d[2]["ihdr"] for d in decoded}) == 1 and {d[2]["mode"] for d in decoded} == {"L"}
    assert {d[2]["size"] for d in decoded} == {(32, 32)}
    assert len({len(u) for u in uris}) == 1

    # The key is right: the side it calls original holds the test slice, the other its edit.
    info = open_dataset(tiny_data)
    slices = {int(r["slice_id"]): to_uint8(r["image"].numpy()[..., 0]) for r in slice_records(info, "test")}
    test_subject = {int(r["slice_id"]): r["subject"] for r in info.rows("test")}
    assert [p["item"] for p in key["pairs"]] == [p["item"] for p in data["pairs"]]
    sides = []
    for entry, page in zip(key["pairs"], data["pairs"]):
        original = _decode(page[entry["original"]])[1]
        other = _decode(page["right" if entry["original"] == "left" else "left"])[1]
        np.testing.assert_array_equal(original, slices[entry["slice_id"]])
        assert np.abs(other.astype(int) - original.astype(int)).mean() > 5  # a real, different edit
        sides.append(entry["original"])
    assert sorted(sides) == ["left", "left", "right", "right"]  # balanced, order random
    n_edited = 0
    for entry, page in zip(key["ratings"], data["ratings"]):
        shown = _decode(page["image"])[1]
        same = np.array_equal(shown, slices[entry["slice_id"]])
        assert same != entry["edited"]
        n_edited += entry["edited"]
    assert n_edited == 3
    used = [e["slice_id"] for e in key["pairs"] + key["ratings"]]
    assert len(set(used)) == 10 and all(s in test_subject for s in used)  # distinct test slices
    assert {e["class"] for e in key["pairs"]} == set(info.classes("manufacturer"))  # classes in turn

    # Same seed, same kit; another seed, another draw.
    again = tmp_path / "again"
    _run("reader-study", "build", "--run", str(edit_run), "--out", str(again), "--pairs", "4", "--ratings", "6", "--seed", "5", "--quiet")
    assert (again / "index.html").read_text() == html
    assert json.loads((tmp_path / "again-key.json").read_text())["pairs"] == key["pairs"]


@pytest.mark.slow
def test_build_refuses_key_inside_kit_and_too_many_items(tmp_path, edit_run):
    kit = tmp_path / "kit"
    result = _run("reader-study", "build", "--run", str(edit_run), "--out", str(kit), "--key", str(kit / "sub" / "key.json"))
    assert result.exit_code == 2 and "must not be inside the kit" in result.output
    assert not kit.exists()
    result = _run("reader-study", "build", "--run", str(edit_run), "--out", str(kit), "--pairs", "10", "--ratings", "20", "--quiet")
    assert result.exit_code == 2 and "the kit needs 30" in result.output and result.output.count("\n") == 1
    assert not kit.exists() and not (tmp_path / "kit-key.json").exists()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep")
    result = _run("reader-study", "build", "--run", str(edit_run), "--out", str(tmp_path / "notes"), "--quiet")
    assert result.exit_code == 2 and "holds no kit" in result.output
    assert (tmp_path / "notes" / "mine.txt").read_text() == "keep"


def test_docs_show_the_current_help_of_build_and_score():
    """docs/reader-study.md quotes both subcommands' --help; it must not drift from the options."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "reader-study.md").read_text()
    for sub in ("build", "score"):
        start = text.index(f"```text\nUsage: geco-tf reader-study {sub} ") + len("```text\n")
        shown = text[start : text.index("```", start)]
        current = CliRunner().invoke(cli, ["reader-study", sub, "--help"], terminal_width=80, prog_name="geco-tf").output
        assert shown == current, f"docs/reader-study.md: `geco-tf reader-study {sub} --help` is stale"
