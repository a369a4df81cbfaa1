"""The reader-study kit's page: one self-contained HTML file, no network, no server.

A reader opens ``KIT/index.html`` from a USB stick in any current browser. Everything it needs
(images as ``data:`` URIs, the items, the script) is inside the file. Answers are kept in the
browser's ``localStorage`` under the kit's id and the reader's name, so closing and reopening the
page loses nothing, and "Export answers" saves ``answers-<reader>.csv`` (``reader,section,item,
answer``) for :mod:`geco_tf.evaluation.reader_study.score`.

The page is blind by construction: it holds item ids (``p01``, ``r01``, in presentation order),
neutral alt text and the images, nothing else; the words a reader could use to tell the two
kinds of images apart appear nowhere in it (the tests check this).
"""

from __future__ import annotations

import html
import json

#: Replaced by the kit's JSON (items and images) and its title.
_DATA_MARK = "__KIT_DATA__"
_TITLE_MARK = "__KIT_TITLE__"

TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>__KIT_TITLE__</title>
<style>
  :root { color-scheme: dark; }
  * { box-sizing: border-box; }
  body { margin: 0; background: #161616; color: #e8e8e8;
         font: 16px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; }
  header { display: flex; justify-content: space-between; align-items: baseline; gap: 1em;
           padding: 0.6em 1.2em; background: #222; border-bottom: 1px solid #333; }
  header h1 { font-size: 1.05em; margin: 0; font-weight: 600; }
  header .who { color: #aaa; font-size: 0.9em; }
  main { max-width: 1100px; margin: 0 auto; padding: 0.8em 1.2em 1em; }
  .hidden { display: none !important; }
  .card { background: #1f1f1f; border: 1px solid #333; border-radius: 8px; padding: 0.9em 1.4em; }
  #start p, #finish p { max-width: 48em; }
  label { font-weight: 600; }
  input[type=text] { font-size: 1.05em; padding: 0.45em 0.6em; width: 16em; margin: 0 0.6em 0 0.4em;
                     background: #111; color: #eee; border: 1px solid #555; border-radius: 5px; }
  button { font: inherit; cursor: pointer; background: #2d2d2d; color: #eee; border: 1px solid #555;
           border-radius: 6px; padding: 0.5em 1.1em; }
  button:hover { background: #3a3a3a; }
  button:disabled { opacity: 0.4; cursor: default; }
  button:focus-visible { outline: 2px solid #7fb3ff; outline-offset: 2px; }
  button.chosen { background: #2f5d9a; border-color: #7fb3ff; }
  button.primary { background: #2f5d9a; border-color: #4a7cc0; }
  kbd { font: 0.85em ui-monospace, monospace; border: 1px solid #555; border-bottom-width: 2px;
        border-radius: 3px; padding: 0 0.3em; background: #111; color: #ccc; }
  .status { display: flex; justify-content: space-between; align-items: baseline; margin-bottom: 0.3em; }
  .status .part { font-weight: 600; font-size: 1.1em; }
  .status .count { color: #aaa; }
  .question { color: #ccc; margin: 0 0 0.6em; }
  .stage { display: flex; justify-content: center; gap: 2.5em; align-items: flex-start; }
  figure { margin: 0; text-align: center; }
  figure img { display: block; width: min(42vw, 440px, calc(100vh - 340px)); min-width: 160px; height: auto; background: #000;
               border: 1px solid #333; }
  #single img { width: min(60vw, 480px, calc(100vh - 340px)); }
  figcaption { margin-top: 0.35em; color: #bbb; font-size: 0.95em; }
  .answers { display: flex; justify-content: center; flex-wrap: wrap; gap: 0.6em; margin: 0.8em 0 0.3em; }
  .scale button { min-width: 3em; }
  .scale .end { color: #aaa; align-self: center; font-size: 0.9em; }
  .keys { text-align: center; color: #999; font-size: 0.88em; margin: 0.3em 0 0; }
  nav { display: flex; justify-content: space-between; align-items: center; gap: 0.8em;
        margin-top: 0.8em; padding-top: 0.7em; border-top: 1px solid #333; }
  nav .answered { color: #aaa; }
  .warn { color: #ffb86b; }
</style>
</head>
<body>
<header>
  <h1>__KIT_TITLE__</h1>
  <span class="who" id="who"></span>
</header>
<main>
  <section id="start" class="card">
    <p>This study has two parts. <b>Part A</b> shows <span id="n-pairs"></span> pairs of MRI
      slices side by side: choose the image of better quality, or <i>No difference</i>.
      <b>Part B</b> shows <span id="n-ratings"></span> slices one at a time: score the quality of
      each from 1 (worst) to 10 (best).</p>
    <p>Your answers are kept in this browser as you go, so you may close the page and come back.
      When you have finished, press <b>Export answers</b> and send the saved file
      (<code>answers-&lt;your name&gt;.csv</code>) back.</p>
    <p id="storage-warning" class="warn hidden">This browser does not let the page keep answers:
      please finish in one sitting and export before closing.</p>
    <form id="start-form">
      <label for="reader">Your name or reader code</label>
      <input type="text" id="reader" autocomplete="off" maxlength="60" required>
      <button type="submit" class="primary" id="begin">Start</button>
    </form>
  </section>

  <section id="study" class="card hidden">
    <div class="status"><span class="part" id="part"></span><span class="count" id="count"></span></div>
    <p class="question" id="question"></p>
    <div id="pair" class="hidden">
      <div class="stage">
        <figure><img id="img-left" alt="Left image"><figcaption>Left</figcaption></figure>
        <figure><img id="img-right" alt="Right image"><figcaption>Right</figcaption></figure>
      </div>
      <div class="answers">
        <button type="button" data-answer="left" id="btn-left">Left</button>
        <button type="button" data-answer="same" id="btn-same">No difference</button>
        <button type="button" data-answer="right" id="btn-right">Right</button>
      </div>
      <p class="keys">Keys: <kbd>L</kbd> or <kbd>&larr;</kbd> Left &middot; <kbd>N</kbd> or <kbd>&darr;</kbd> No difference &middot; <kbd>R</kbd> or <kbd>&rarr;</kbd> Right</p>
    </div>
    <div id="single" class="hidden">
      <div class="stage"><figure><img id="img-single" alt="Image to score"></figure></div>
      <div class="answers scale" id="scale"><span class="end">worst</span></div>
      <p class="keys">Keys: <kbd>1</kbd>&ndash;<kbd>9</kbd>, and <kbd>0</kbd> for 10</p>
    </div>
    <nav>
      <span><button type="button" id="prev">&lsaquo; Previous</button>
            <button type="button" id="next">Next &rsaquo;</button></span>
      <span class="answered" id="answered"></span>
      <span><button type="button" id="change">Change reader</button>
            <button type="button" class="primary" id="export">Export answers</button></span>
    </nav>
  </section>

  <section id="finish" class="card hidden">
    <p><b>Thank you: every item has an answer.</b> Press <b>Export answers</b> to save the file
      <code id="filename"></code> and send it back. You can still go back and change an answer.</p>
    <p><button type="button" id="back">&lsaquo; Back to the last item</button>
       <button type="button" class="primary" id="export2">Export answers</button></p>
  </section>
</main>
<script type="application/json" id="kit-data">__KIT_DATA__</script>
<script>
"use strict";
(function () {
  const KIT = JSON.parse(document.getElementById("kit-data").textContent);
  const ITEMS = KIT.pairs.map(p => ({section: "pair", item: p.item, left: p.left, right: p.right}))
    .concat(KIT.ratings.map(r => ({section: "rating", item: r.item, image: r.image})));
  const NPAIRS = KIT.pairs.length, NRATINGS = KIT.ratings.length;
  const PREFIX = "geco-reader-study:" + KIT.kit + ":";
  const $ = id => document.getElementById(id);

  let store = null;
  try { window.localStorage.setItem(PREFIX + "probe", "1"); window.localStorage.removeItem(PREFIX + "probe");
        store = window.localStorage; } catch (e) { store = null; }
  const memory = {};
  function load(key, fallback) {
    let raw = store ? store.getItem(PREFIX + key) : memory[key];
    if (raw === null || raw === undefined) return fallback;
    try { return JSON.parse(raw); } catch (e) { return fallback; }
  }
  function save(key, value) {
    const raw = JSON.stringify(value);
    if (store) { try { store.setItem(PREFIX + key, raw); return; } catch (e) { /* full: keep in memory */ } }
    memory[key] = raw;
  }

  let reader = null, answers = {}, index = 0;

  function answeredCount() { return ITEMS.filter(it => answers[it.section + ":" + it.item] !== undefined).length; }

  function safeName(name) { return name.replace(/[^A-Za-z0-9_.-]+/g, "_").replace(/^[_.]+|[_.]+$/g, "") || "reader"; }

  function begin(name) {
    reader = name;
    save("reader", reader);
    answers = load("answers:" + reader, {});
    index = Math.min(load("position:" + reader, 0), ITEMS.length - 1);
    if (!(index >= 0)) index = 0;
    $("who").textContent = "Reader: " + reader;
    $("filename").textContent = "answers-" + safeName(reader) + ".csv";
    $("start").classList.add("hidden");
    if (document.activeElement && document.activeElement.blur) document.activeElement.blur();
    show(index);
  }

  function show(i) {
    index = Math.max(0, Math.min(i, ITEMS.length - 1));
    save("position:" + reader, index);
    $("finish").classList.add("hidden");
    $("study").classList.remove("hidden");
    const it = ITEMS[index];
    const chosen = answers[it.section + ":" + it.item];
    if (it.section === "pair") {
      const k = index + 1;
      $("part").textContent = "Part A \u00b7 pairs";
      $("count").textContent = "item " + k + " of " + NPAIRS;
      $("question").textContent = "Which image has the better quality?";
      $("img-left").src = it.left; $("img-right").src = it.right;
      $("pair").classList.remove("hidden"); $("single").classList.add("hidden");
      for (const b of document.querySelectorAll("#pair button")) b.classList.toggle("chosen", b.dataset.answer === chosen);
    } else {
      const k = index - NPAIRS + 1;
      $("part").textContent = "Part B \u00b7 quality scores";
      $("count").textContent = "item " + k + " of " + NRATINGS;
      $("question").textContent = "Score the quality of this image from 1 (worst) to 10 (best).";
      $("img-single").src = it.image;
      $("single").classList.remove("hidden"); $("pair").classList.add("hidden");
      for (const b of document.querySelectorAll("#scale button")) b.classList.toggle("chosen", b.dataset.answer === String(chosen));
    }
    $("prev").disabled = index === 0;
    $("answered").textContent = answeredCount() + " of " + ITEMS.length + " answered";
  }

  function answer(value) {
    const it = ITEMS[index];
    answers[it.section + ":" + it.item] = value;
    save("answers:" + reader, answers);
    if (index + 1 < ITEMS.length) { show(index + 1); return; }
    show(index);
    if (answeredCount() === ITEMS.length) finish();
  }

  function finish() {
    $("study").classList.add("hidden");
    $("finish").classList.remove("hidden");
  }

  function csvField(s) { s = String(s); return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s; }

  function exportAnswers() {
    const lines = ["reader,section,item,answer"];
    for (const it of ITEMS) {
      const a = answers[it.section + ":" + it.item];
      if (a !== undefined) lines.push([reader, it.section, it.item, a].map(csvField).join(","));
    }
    const blob = new Blob([lines.join("\r\n") + "\r\n"], {type: "text/csv"});
    const url = URL.createObjectURL(blob);
    const a = document.createElement("a");
    a.href = url; a.download = "answers-" + safeName(reader) + ".csv";
    document.body.appendChild(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  const scale = $("scale");
  for (let v = 1; v <= 10; v++) {
    const b = document.createElement("button");
    b.type = "button"; b.textContent = String(v); b.dataset.answer = String(v); b.id = "score-" + v;
    b.addEventListener("click", () => answer(v));
    scale.appendChild(b);
  }
  const best = document.createElement("span"); best.className = "end"; best.textContent = "best"; scale.appendChild(best);
  for (const b of document.querySelectorAll("#pair button")) b.addEventListener("click", () => answer(b.dataset.answer));
  $("prev").addEventListener("click", () => show(index - 1));
  $("next").addEventListener("click", () => { if (index + 1 < ITEMS.length) show(index + 1); else finish(); });
  $("back").addEventListener("click", () => show(ITEMS.length - 1));
  $("export").addEventListener("click", exportAnswers);
  $("export2").addEventListener("click", exportAnswers);
  $("change").addEventListener("click", () => {
    $("study").classList.add("hidden"); $("finish").classList.add("hidden");
    $("start").classList.remove("hidden"); $("reader").value = ""; $("reader").focus();
  });
  $("start-form").addEventListener("submit", ev => {
    ev.preventDefault();
    const name = $("reader").value.trim();
    if (name) begin(name);
  });

  document.addEventListener("keydown", ev => {
    if (reader === null || $("study").classList.contains("hidden")) return;
    if (ev.target && ev.target.tagName === "INPUT") return;
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const it = ITEMS[index], k = ev.key;
    let handled = true;
    if (k === "PageUp") show(index - 1);
    else if (k === "PageDown") { if (index + 1 < ITEMS.length) show(index + 1); else finish(); }
    else if (it.section === "pair") {
      if (k === "l" || k === "L" || k === "ArrowLeft") answer("left");
      else if (k === "r" || k === "R" || k === "ArrowRight") answer("right");
      else if (k === "n" || k === "N" || k === "ArrowDown") answer("same");
      else handled = false;
    } else if (/^[0-9]$/.test(k)) answer(k === "0" ? 10 : Number(k));
    else handled = false;
    if (handled) ev.preventDefault();
  });

  $("n-pairs").textContent = String(NPAIRS);
  $("n-ratings").textContent = String(NRATINGS);
  if (!store) $("storage-warning").classList.remove("hidden");
  const last = load("reader", null);
  if (last) $("reader").value = last;
  $("reader").focus();
})();
</script>
</body>
</html>
"""


def render_page(kit: dict, title: str = "Reader study") -> str:
    """The kit's ``index.html``: ``kit`` is ``{"kit": id, "pairs": [{"item", "left", "right"}],
    "ratings": [{"item", "image"}]}`` with images as ``data:`` URIs, and nothing else."""
    allowed = {"kit", "pairs", "ratings"}
    if set(kit) - allowed:
        raise ValueError(f"kit data has keys beyond {sorted(allowed)}: {sorted(set(kit) - allowed)}")
    data = json.dumps(kit, separators=(",", ":")).replace("<", "\\u003c")
    return TEMPLATE.replace(_TITLE_MARK, html.escape(title)).replace(_DATA_MARK, data)
