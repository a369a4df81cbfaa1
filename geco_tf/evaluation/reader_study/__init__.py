"""The paper's reader study (section 4.3, Figure 3): a blinded, offline kit and its scoring.

Radiologists judge whether GECO's edits can be seen: part A shows pairs (an image and its edit,
left/right at random) and asks which is better or whether there is no difference; part B shows
single images, half of them edited, to be scored 1-10 for quality. :mod:`.kit` builds the kit (one
self-contained HTML page plus a key kept outside it), :mod:`.page` is that page, and
:mod:`.score` un-blinds the readers' exported answers into Figure 3 and a paired test.
"""

from geco_tf.evaluation.reader_study.kit import build_kit, default_key_path
from geco_tf.evaluation.reader_study.score import read_answers, read_key, score_answers

__all__ = ["build_kit", "default_key_path", "read_answers", "read_key", "score_answers"]
