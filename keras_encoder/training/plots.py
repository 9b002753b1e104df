"""Figures for TensorBoard: attention heat maps and confusion matrices.

Figures are drawn with matplotlib's object API on an Agg canvas, never
through pyplot, so drawing from a training callback touches no global GUI
state and works on machines without a display.
"""

import functools
import warnings

import numpy as np
from matplotlib import font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# Fonts that carry CJK glyphs, in order of preference.
_CJK_FONT_HINTS = (
    "Noto Sans CJK",
    "Noto Sans SC",
    "Source Han Sans",
    "WenQuanYi",
    "Droid Sans Fallback",
    "SimHei",
    "Microsoft YaHei",
    "PingFang",
    "AR PL",
)
_CJK_FILE_HINTS = ("wqy", "cjk", "droidsansfallback", "simhei", "yahei", "sourcehan", "notosanssc")


@functools.lru_cache(maxsize=1)
def cjk_font():
    """The family name of an installed CJK font, or `None`.

    On Debian/Ubuntu, `apt-get install fonts-wqy-microhei` provides one.
    """
    found = _find(_CJK_FONT_HINTS)
    if found is None:
        # matplotlib caches its font list; a font installed after the cache
        # was built is only on disk, so register likely files and look again.
        for path in font_manager.findSystemFonts():
            if any(hint in path.lower() for hint in _CJK_FILE_HINTS):
                try:
                    font_manager.fontManager.addfont(path)
                except (OSError, RuntimeError, ValueError):
                    continue
        found = _find(_CJK_FONT_HINTS)
    return found


def _find(hints):
    names = sorted({font.name for font in font_manager.fontManager.ttflist})
    for hint in hints:
        for name in names:
            if hint.lower() in name.lower():
                return name
    return None


def _needs_cjk(tokens):
    return any(ord(char) > 0x2E7F for token in tokens for char in token)


def tick_labels(tokens):
    """Labels that will render: the tokens, or positions when no font can."""
    if _needs_cjk(tokens) and cjk_font() is None:
        return [str(index) for index in range(len(tokens))]
    return list(tokens)


def attention_figure(scores, tokens, title):
    """One heat map per head, queries down, keys across.

    Args:
        scores: array `(N, T, T)` of attention weights for one sentence.
        tokens: list of `T` token strings.
        title: figure title, e.g. the block name.
    """
    heads, length = scores.shape[0], scores.shape[-1]
    labels = tick_labels(tokens)
    cell = max(2.6, 0.2 * length)
    figure = Figure(figsize=(cell * heads + 1.2, cell + 1.0), dpi=90, layout="constrained")
    FigureCanvasAgg(figure)
    font = {"family": cjk_font()} if cjk_font() else {}
    axes = figure.subplots(1, heads, squeeze=False)[0]
    # One colour scale for all heads of a block, from 0 to the largest weight,
    # so diffuse and sharp heads compare at a glance.
    top = float(np.max(scores)) if scores.size else 1.0
    for head, axis in enumerate(axes):
        image = axis.imshow(scores[head], cmap="viridis", vmin=0.0, vmax=top)
        axis.set_title(f"head {head}", fontsize=9)
        axis.set_xticks(range(length))
        axis.set_yticks(range(length))
        axis.set_xticklabels(labels, rotation=90, fontsize=7, **font)
        axis.set_yticklabels(labels if head == 0 else [], fontsize=7, **font)
        axis.set_xlabel("key", fontsize=8)
    axes[0].set_ylabel("query", fontsize=8)
    figure.colorbar(image, ax=list(axes), shrink=0.8)
    figure.suptitle(title, fontsize=10)
    return figure


def confusion_figure(matrix, label_names, title="confusion matrix", normalize=False):
    """Counts with true labels down and predictions across.

    With `normalize=True` the colour is each row's share (recall per true
    label), so rare labels stay visible next to a dominant one such as the
    tag `O`; the numbers written in the cells are always counts (left out
    above 20 labels, where they would not fit).
    """
    matrix = np.asarray(matrix)
    size = min(max(3.0, 0.6 * len(label_names) + 1.5), 16.0)
    figure = Figure(figsize=(size + 0.8, size), dpi=90)
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    shade = matrix
    if normalize:
        totals = matrix.sum(axis=1, keepdims=True)
        shade = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    image = axis.imshow(shade, cmap="Blues")
    font = {"family": cjk_font()} if cjk_font() else {}
    labels = tick_labels(label_names)
    axis.set_xticks(range(len(labels)))
    axis.set_yticks(range(len(labels)))
    axis.set_xticklabels(labels, rotation=45, ha="right", fontsize=8, **font)
    axis.set_yticklabels(labels, fontsize=8, **font)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    threshold = shade.max() / 2 if shade.size else 0
    for (row, column), count in np.ndenumerate(matrix if len(label_names) <= 20 else []):
        axis.text(
            column, row, str(count), ha="center", va="center", fontsize=8,
            color="white" if shade[row, column] > threshold else "black",
        )
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    axis.set_title(title)
    figure.tight_layout()
    return figure


def figure_to_image(figure):
    """RGBA uint8 array `(1, H, W, 4)` for `tf.summary.image`."""
    with warnings.catch_warnings():
        # Missing glyphs are already handled by `tick_labels`.
        warnings.simplefilter("ignore", UserWarning)
        figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[None].copy()
