"""Un-blind the readers' answers: the paper's Figure 3 and a paired test over readers.

Part A (pairs) becomes, per reader, how often the original was preferred, how often the edit
was, and how often there was no difference (Figure 3a's "right" / "wrong" / "no difference").
Part B (single images scored 1-10) becomes, per reader, the mean score of originals and of
edited images, their difference (original - edited) and its 95% interval (Welch's t interval:
within one reader the two groups are different slices, independent, of unequal variance).

Over readers, the test is a **paired t-test on the per-reader mean scores** (original vs edited).
Paired, because readers use the scale very differently (the paper's reader 4 scored everything
at less than two thirds of the others): each reader is their own control, so only the
within-reader difference counts. On reader means, because a reader's scores of different images
are not independent observations of the effect. A t-test rather than the rank test, because with
the paper's five readers the exact Wilcoxon signed-rank test cannot go below p = 0.0625 whatever
the data; it is reported beside the t-test as the distribution-free check, and the t-test's 95%
interval of the mean difference says how large an effect the study can rule out.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np

from geco_tf.errors import UserError
from geco_tf.io import atomic_path, write_json_atomic, write_text_atomic

HEADER = ("reader", "section", "item", "answer")
PAIR_ANSWERS = ("left", "right", "same")
TEST_NAME = "paired t-test on per-reader mean scores (original vs edited)"


def read_key(path: str | os.PathLike) -> dict:
    """The key JSON of :func:`~geco_tf.evaluation.reader_study.kit.build_kit`, checked:
    ``{"pairs": {item: "left"|"right"}, "ratings": {item: bool}}`` plus the raw JSON."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: key not found")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("pairs"), list) or not isinstance(raw.get("ratings"), list):
        raise UserError(f"{path}: not a reader-study key (needs lists 'pairs' and 'ratings')")
    pairs, ratings = {}, {}
    for n, entry in enumerate(raw["pairs"], start=1):
        if not isinstance(entry, dict) or entry.get("original") not in ("left", "right") or not entry.get("item"):
            raise UserError(f"{path}: pairs entry {n} needs 'item' and 'original' ('left' or 'right')")
        pairs[str(entry["item"])] = entry["original"]
    for n, entry in enumerate(raw["ratings"], start=1):
        if not isinstance(entry, dict) or not isinstance(entry.get("edited"), bool) or not entry.get("item"):
            raise UserError(f"{path}: ratings entry {n} needs 'item' and 'edited' (true or false)")
        ratings[str(entry["item"])] = entry["edited"]
    if len(pairs) != len(raw["pairs"]) or len(ratings) != len(raw["ratings"]):
        raise UserError(f"{path}: an item id appears twice")
    return {"pairs": pairs, "ratings": ratings, "raw": raw}


def read_answers(paths: list[str | os.PathLike], key: dict) -> dict[str, dict]:
    """Answers per reader from exported CSVs: ``{reader: {"pair": {item: answer},
    "rating": {item: score}}}``. Any bad row (wrong header, unknown section or item, answer out
    of range, an item answered twice by one reader, also across files) raises
    :class:`UserError` naming the file and line."""
    readers: dict[str, dict] = {}
    seen: dict[tuple[str, str, str], str] = {}
    if not paths:
        raise UserError("no answers file given")
    for path in map(Path, paths):
        if not path.is_file():
            raise UserError(f"{path}: answers file not found")
        try:
            with open(path, newline="", encoding="utf-8-sig") as f:
                rows = list(csv.reader(f))
        except (UnicodeDecodeError, csv.Error) as exc:
            raise UserError(f"{path}: not a readable CSV ({exc})") from None
        if not rows or tuple(c.strip() for c in rows[0]) != HEADER:
            got = ",".join(rows[0]) if rows else "an empty file"
            raise UserError(f"{path}, line 1: header must be {','.join(HEADER)}, got {got!r}")
        for line, row in enumerate(rows[1:], start=2):
            if not any(c.strip() for c in row):
                continue
            where = f"{path}, line {line}"
            if len(row) != len(HEADER):
                raise UserError(f"{where}: {len(row)} fields, expected {len(HEADER)} ({','.join(HEADER)})")
            reader, section, item, answer = (c.strip() for c in row)
            if not reader:
                raise UserError(f"{where}: empty reader name")
            if section == "pair":
                if item not in key["pairs"]:
                    raise UserError(f"{where}: unknown pair item {item!r} (not in the key)")
                if answer not in PAIR_ANSWERS:
                    raise UserError(f"{where}: pair answer {answer!r} is not one of {', '.join(PAIR_ANSWERS)}")
                value: str | int = answer
            elif section == "rating":
                if item not in key["ratings"]:
                    raise UserError(f"{where}: unknown rating item {item!r} (not in the key)")
                if not answer.isdigit() or not 1 <= int(answer) <= 10:
                    raise UserError(f"{where}: rating {answer!r} is not an integer from 1 to 10")
                value = int(answer)
            else:
                raise UserError(f"{where}: section {section!r} is not 'pair' or 'rating'")
            ident = (reader, section, item)
            if ident in seen:
                raise UserError(f"{where}: reader {reader!r} answered {section} {item} twice (first at {seen[ident]})")
            seen[ident] = where
            readers.setdefault(reader, {"pair": {}, "rating": {}})[section][item] = value
    if not readers:
        raise UserError(f"{', '.join(map(str, paths))}: no answers")
    return readers


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def welch_interval(a: list[float], b: list[float], level: float = 0.95) -> list[float] | None:
    """Interval of mean(a) - mean(b) for independent samples of unequal variance (Welch);
    None when either has fewer than two values."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return None
    d = float(np.mean(a) - np.mean(b))
    va, vb = float(np.var(a, ddof=1)) / len(a), float(np.var(b, ddof=1)) / len(b)
    se = math.sqrt(va + vb)
    if se == 0.0:
        return [d, d]
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    return [d - half, d + half]


def _reader_summary(answers: dict, key: dict) -> dict:
    counts = {"original": 0, "edited": 0, "same": 0}
    for item, answer in answers["pair"].items():
        if answer == "same":
            counts["same"] += 1
        else:
            counts["original" if answer == key["pairs"][item] else "edited"] += 1
    originals = [float(s) for i, s in answers["rating"].items() if not key["ratings"][i]]
    edits = [float(s) for i, s in answers["rating"].items() if key["ratings"][i]]
    om, em = _mean(originals), _mean(edits)
    return {
        "pairs": counts,
        "ratings": {
            "original_mean": om,
            "edited_mean": em,
            "n": len(originals) + len(edits),
            "n_original": len(originals),
            "n_edited": len(edits),
            "difference": None if om is None or em is None else om - em,
            "ci95": welch_interval(originals, edits),
        },
    }


def paired_test(original: list[float], edited: list[float]) -> dict:
    """The over-readers test (module docstring): paired t-test on per-reader means, with the
    mean difference's 95% interval, and the Wilcoxon signed-rank p beside it."""
    from scipy import stats

    d = np.asarray(original, float) - np.asarray(edited, float)
    out = {"test": TEST_NAME, "n_readers": len(d), "mean_difference": float(d.mean()) if len(d) else None,
           "ci95": None, "t": None, "df": None, "p": None, "wilcoxon_p": None, "note": None}
    if len(d) < 2:
        out["note"] = "needs at least two readers with both kinds of images scored"
        return out
    sd = float(d.std(ddof=1))
    out["df"] = len(d) - 1
    if sd == 0.0:
        out["ci95"] = [float(d.mean()), float(d.mean())]
        out["note"] = "every reader's difference is the same: no variance, no test"
        return out
    res = stats.ttest_rel(original, edited)
    half = float(stats.t.ppf(0.975, len(d) - 1)) * sd / math.sqrt(len(d))
    out.update(t=float(res.statistic), p=float(res.pvalue), ci95=[float(d.mean()) - half, float(d.mean()) + half])
    if np.any(d != 0):
        out["wilcoxon_p"] = float(stats.wilcoxon(original, edited).pvalue)
    return out


def summarise(answers: dict[str, dict], key: dict) -> dict:
    """``{"readers": {name: {...}}, "overall": {...}}`` (the shape of ``summary.json``)."""
    from scipy import stats

    readers = {name: _reader_summary(answers[name], key) for name in sorted(answers)}
    totals = {k: sum(r["pairs"][k] for r in readers.values()) for k in ("original", "edited", "same")}
    preferred = totals["original"] + totals["edited"]
    both = [r["ratings"] for r in readers.values() if r["ratings"]["original_mean"] is not None and r["ratings"]["edited_mean"] is not None]
    ratings = paired_test([r["original_mean"] for r in both], [r["edited_mean"] for r in both])
    ratings["original_mean"] = _mean([r["original_mean"] for r in both])
    ratings["edited_mean"] = _mean([r["edited_mean"] for r in both])
    return {
        "readers": readers,
        "overall": {
            "n_readers": len(readers),
            "n_pairs": len(key["pairs"]),
            "n_ratings": len(key["ratings"]),
            "pairs": {
                **totals,
                # Among answers with a preference, is the original preferred more often than the
                # edit? Two-sided binomial (sign) test; items are shared between readers, so the
                # answers are not fully independent: read it as descriptive.
                "sign_test_p": float(stats.binomtest(totals["original"], preferred).pvalue) if preferred else None,
            },
            "ratings": ratings,
        },
    }


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def text_table(summary: dict) -> str:
    """The per-reader table printed by ``geco-tf reader-study score``."""
    head = ("reader", "pref. original", "pref. edited", "no difference", "scored", "original", "edited",
            "difference [95% CI]")
    lines = []
    for name, r in summary["readers"].items():
        p, s = r["pairs"], r["ratings"]
        ci = s["ci95"]
        diff = _fmt(s["difference"]) + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
        lines.append((name, str(p["original"]), str(p["edited"]), str(p["same"]), str(s["n"]),
                      _fmt(s["original_mean"]), _fmt(s["edited_mean"]), diff))
    o = summary["overall"]
    op, orat = o["pairs"], o["ratings"]
    ci = orat["ci95"]
    lines.append(("all readers", str(op["original"]), str(op["edited"]), str(op["same"]), "",
                  _fmt(orat["original_mean"]), _fmt(orat["edited_mean"]),
                  _fmt(orat["mean_difference"]) + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")))
    widths = [max(len(row[i]) for row in [head, *lines]) for i in range(len(head))]
    fmt_row = lambda row: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))  # noqa: E731
    rule = "-" * len(fmt_row(head))
    out = [f"Part A: {o['n_pairs']} pairs; part B: {o['n_ratings']} images scored 1-10 "
           "(difference = original - edited)", rule, fmt_row(head), rule, *map(fmt_row, lines[:-1]), rule, fmt_row(lines[-1]), rule]
    if orat["p"] is not None:
        wil = f"; Wilcoxon signed-rank p = {orat['wilcoxon_p']:.3g}" if orat["wilcoxon_p"] is not None else ""
        out.append(f"{orat['test']}: t({orat['df']}) = {orat['t']:.2f}, p = {orat['p']:.3g}{wil}")
    else:
        out.append(f"{orat['test']}: {orat['note']}")
    if op["sign_test_p"] is not None:
        out.append(f"pairs with a preference: original {op['original']} vs edited {op['edited']}, "
                   f"sign test p = {op['sign_test_p']:.3g} (descriptive: readers share items)")
    return "\n".join(out) + "\n"


def plot_figure3(summary: dict, path: str | os.PathLike) -> None:
    """Figure 3: (a) per reader, preferred original / edited / no difference; (b) per reader,
    mean score of originals and edits with the difference's 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary["readers"])
    x = np.arange(len(names))
    fig, (ax_a, ax_b) = plt.subplots(1, 2, figsize=(max(8.0, 2.2 + 1.3 * len(names)), 4.2))
    w = 0.27
    for k, (field, label, colour) in enumerate((("original", "preferred original ('right')", "#4c72b0"),
                                                ("edited", "preferred edited ('wrong')", "#dd8452"),
                                                ("same", "no difference", "#8c8c8c"))):
        ax_a.bar(x + (k - 1) * w, [summary["readers"][n]["pairs"][field] for n in names], w, label=label, color=colour)
    ax_a.set_xticks(x, names, rotation=30 if len(names) > 5 else 0, ha="right" if len(names) > 5 else "center")
    ax_a.set_ylabel("pairs")
    ax_a.set_title(f"(a) which image is better ({summary['overall']['n_pairs']} pairs)")
    ax_a.set_ylim(0, max(1, summary["overall"]["n_pairs"]) * 1.5)
    ax_a.legend(fontsize=8, frameon=False, loc="upper left")
    ax_a.yaxis.get_major_locator().set_params(integer=True)
    for k, (field, label, colour) in enumerate((("original_mean", "original", "#4c72b0"),
                                                ("edited_mean", "edited", "#dd8452"))):
        vals = [summary["readers"][n]["ratings"][field] for n in names]
        ax_b.bar(x + (k - 0.5) * 0.38, [np.nan if v is None else v for v in vals], 0.38, label=label, color=colour)
    for i, n in enumerate(names):
        r = summary["readers"][n]["ratings"]
        if r["difference"] is not None:
            text = f"{r['difference']:+.2f}"
            if r["ci95"]:
                text += f"\n[{r['ci95'][0]:+.1f}, {r['ci95'][1]:+.1f}]"
            top = max(r["original_mean"], r["edited_mean"])
            ax_b.text(i, top + 0.25, text, ha="center", va="bottom", fontsize=7)
    ax_b.set_xticks(x, names, rotation=30 if len(names) > 5 else 0, ha="right" if len(names) > 5 else "center")
    ax_b.set_ylim(0, 13.5)
    ax_b.set_ylabel("mean quality score (1-10)")
    ax_b.set_title("(b) quality, original - edited [95% CI]")
    ax_b.legend(fontsize=8, frameon=False, loc="upper left", ncol=2)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=130, format="png")
    plt.close(fig)


def score_answers(key_path: str | os.PathLike, answer_paths: list[str | os.PathLike], out_dir: str | os.PathLike) -> dict:
    """Score exported answers against the key; write ``out_dir/{summary.json, figure3.png,
    table.txt}``. Returns the summary (with ``"table"``, the text table)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is a file, not a directory")
    key = read_key(key_path)
    answers = read_answers(list(answer_paths), key)
    summary = summarise(answers, key)
    table = text_table(summary)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "summary.json", summary)
    write_text_atomic(out_dir / "table.txt", table)
    plot_figure3(summary, out_dir / "figure3.png")
    return {**summary, "table": table}
