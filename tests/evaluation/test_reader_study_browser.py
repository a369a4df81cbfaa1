"""The reader-study kit in a real browser: Debian's headless chromium driven by selenium through
Debian's chromedriver (no driver download; ``.ci/run`` installs both).

A reader types a name, answers every item with clicks and keys, closes the browser and reopens
the page with the same profile (answers must still be there), exports, and the scorer turns the
exported CSV into exactly the counts and means of the answers given.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()),
        reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; .ci/run does)",
    ),
]

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the test extra: pip install -e '.[test]'")
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

READER = "Dr. K, rad 2"  # a comma and a space: the CSV must quote it, the file name must not carry it
FILE_NAME = "answers-Dr._K_rad_2.csv"


def _tiny_run(tmp_path: Path, data: Path) -> Path:
    """An honest stand-in for a trained run: an untrained (identity at start) U-Net saved the way
    ``geco-tf train`` saves it, with the config keys the kit reads. Fast; what the kit does with
    the generator does not depend on its training."""
    import keras

    from geco_tf.models import UNetGenerator

    keras.utils.set_random_seed(0)
    gen = UNetGenerator(depth=2, base_filters=4, input_skip=True)
    gen(np.zeros((1, 32, 32, 1), np.float32))
    run = tmp_path / "run"
    run.mkdir()
    gen.save(run / "generator.keras")
    (run / "config.json").write_text(json.dumps({"target": "manufacturer", "data": str(data), "image_size": 32}))
    return run


def _driver(profile: Path, downloads: Path):
    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--user-data-dir={profile}", "--window-size=1200,900"):
        opts.add_argument(arg)
    opts.add_experimental_option("prefs", {
        "download.default_directory": str(downloads),
        "download.prompt_for_download": False,
        "download.directory_upgrade": True,
    })
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def _state(driver) -> tuple[str, str]:
    return driver.find_element(By.ID, "part").text, driver.find_element(By.ID, "count").text


def _press(driver, key: str) -> None:
    webdriver.ActionChains(driver).send_keys(key).perform()


def test_kit_in_chromium_answers_persist_export_and_score(tmp_path, tiny_data):
    from geco_tf.evaluation.reader_study.kit import build_kit
    from geco_tf.evaluation.reader_study.score import score_answers

    run = _tiny_run(tmp_path, tiny_data)
    kit = tmp_path / "kit"
    summary = build_kit(run, kit, pairs=4, ratings=6, seed=1)
    key = json.loads(Path(summary["key"]).read_text())
    url = (kit / "index.html").resolve().as_uri()
    profile, downloads = tmp_path / "profile", tmp_path / "downloads"
    downloads.mkdir()

    # The answers the reader gives, and how (click or key).
    pair_plan = [("click", "btn-left", "left"), ("key", "r", "right"), ("key", Keys.ARROW_DOWN, "same"),
                 ("key", Keys.ARROW_LEFT, "left")]
    rating_plan = [("click", "score-7", 7), ("key", "0", 10), ("key", "3", 3), ("click", "score-1", 1),
                   ("key", "9", 9), ("click", "score-10", 10)]

    driver = _driver(profile, downloads)
    try:
        driver.get(url)
        assert driver.title == "Reader study"
        driver.find_element(By.ID, "reader").send_keys(READER + Keys.ENTER)
        assert _state(driver) == ("Part A · pairs", "item 1 of 4")
        for how, what, _ in pair_plan[:2]:
            driver.find_element(By.ID, what).click() if how == "click" else _press(driver, what)
        assert _state(driver) == ("Part A · pairs", "item 3 of 4")
        assert driver.find_element(By.ID, "answered").text == "2 of 10 answered"
    finally:
        driver.quit()

    # Close and reopen with the same browser profile: the name and both answers are still there.
    driver = _driver(profile, downloads)
    try:
        driver.get(url)
        assert driver.find_element(By.ID, "reader").get_attribute("value") == READER
        driver.find_element(By.ID, "begin").click()
        assert _state(driver) == ("Part A · pairs", "item 3 of 4")
        assert driver.find_element(By.ID, "answered").text == "2 of 10 answered"
        driver.find_element(By.ID, "prev").click()
        assert "chosen" in driver.find_element(By.ID, "btn-right").get_attribute("class")
        driver.find_element(By.ID, "next").click()
        for how, what, _ in pair_plan[2:]:
            driver.find_element(By.ID, what).click() if how == "click" else _press(driver, what)
        assert _state(driver) == ("Part B · quality scores", "item 1 of 6")
        # Reload mid-way through part B too (same session).
        driver.find_element(By.ID, rating_plan[0][1]).click()
        driver.refresh()
        driver.find_element(By.ID, "begin").click()
        assert _state(driver) == ("Part B · quality scores", "item 2 of 6")
        for how, what, _ in rating_plan[1:]:
            driver.find_element(By.ID, what).click() if how == "click" else _press(driver, what)
        assert driver.find_element(By.ID, "finish").is_displayed()
        driver.find_element(By.ID, "export2").click()
        exported = downloads / FILE_NAME
        deadline = time.monotonic() + 15
        while not exported.is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert exported.is_file(), f"no download; got {sorted(p.name for p in downloads.iterdir())}"
    finally:
        driver.quit()

    # What the scorer must find, from the key and the answers given.
    original_side = {p["item"]: p["original"] for p in key["pairs"]}
    edited = {r["item"]: r["edited"] for r in key["ratings"]}
    expected = {"original": 0, "edited": 0, "same": 0}
    for k, (_, _, answer) in enumerate(pair_plan, start=1):
        side = original_side[f"p{k:02d}"]
        expected["same" if answer == "same" else "original" if answer == side else "edited"] += 1
    scores = {f"r{k:02d}": s for k, (_, _, s) in enumerate(rating_plan, start=1)}
    orig = [s for i, s in scores.items() if not edited[i]]
    edit = [s for i, s in scores.items() if edited[i]]

    result = score_answers(summary["key"], [exported], tmp_path / "scored")
    reader = result["readers"][READER]
    assert reader["pairs"] == expected
    assert reader["ratings"]["n"] == 6
    assert reader["ratings"]["original_mean"] == pytest.approx(np.mean(orig))
    assert reader["ratings"]["edited_mean"] == pytest.approx(np.mean(edit))
    assert (tmp_path / "scored" / "figure3.png").stat().st_size > 0
