"""Report section for a CLIP-style image–text model: zero-shot accuracy on seen and held-out classes
against a supervised linear probe, the image–text similarity of a batch, and CKA on both sides."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.offsetbox import AnnotationBbox, OffsetImage

from reports._render import figure_to_data_uri, render_fragment, table_html
from reports._report import Section
from reports._similarity_section import _matrix_heatmap

__all__ = ["captions_section"]

# One colour per read-out, the same in the chart and its legend.
_READOUT_COLORS = {
    ("zero-shot", "own"): "#1f77b4",
    ("zero-shot", "all names"): "#9ecae1",
    ("linear probe", "own"): "#ff7f0e",
}
_HELD_OUT_COLOR = "#c0392b"


def _readout_key(row) -> tuple[str, str]:
    return row["method"], "all names" if row["candidates"] == "all names" else "own"


def _readout_label(row) -> str:
    return f"{row['method']} ({row['candidates']})"


def _accuracy_bars(frame) -> str:
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    groups = list(dict.fromkeys(frame["images"]))
    width = 0.8 / max(frame.groupby("images").size().max(), 1)
    shown = set()
    for g, images in enumerate(groups):
        rows = frame[frame["images"] == images].reset_index(drop=True)
        for i, row in rows.iterrows():
            x = g + (i - (len(rows) - 1) / 2) * width
            label = _readout_label(row).replace(f"{images} names", "own names")
            ax.bar(x, row["accuracy"], width * 0.92, color=_READOUT_COLORS[_readout_key(row)],
                   label=None if label in shown else label)
            shown.add(label)
            ax.text(x, row["accuracy"] + 0.01, f"{row['accuracy']:.2f}", ha="center", va="bottom", fontsize=8)
            ax.hlines(row["chance"], x - width / 2, x + width / 2, colors="black", linestyles=":", lw=1.2,
                      label=None if "chance" in shown else "chance")
            shown.add("chance")
    ax.set_xticks(range(len(groups)), [f"{images} classes' test images" for images in groups], fontsize=9)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
    sns.despine(fig)
    return figure_to_data_uri(fig)


def _similarity_figure(result: Any) -> str:
    similarity = np.asarray(result.similarity)
    n_images, n_captions = similarity.shape
    held_out = set(result.held_out_classes)
    fig, ax = plt.subplots(figsize=(0.55 * n_captions + 3.2, 0.5 * n_images + 2.2))
    image = ax.imshow(similarity, cmap="viridis", aspect="auto", interpolation="nearest")
    for i in range(n_images):
        best = int(similarity[i].argmax())
        for j in range(n_captions):
            ax.text(j, i, f"{similarity[i, j]:.2f}", ha="center", va="center", fontsize=6.5,
                    color="black" if j == best else "white", fontweight="bold" if j == best else "normal")
    ax.set_xticks(range(n_captions), result.captions, rotation=55, ha="right", fontsize=8)
    for label in ax.get_xticklabels():
        if any(label.get_text() == caption for caption, name in zip(result.captions, result.class_names) if name in held_out):
            label.set_color(_HELD_OUT_COLOR)
    names = [result.class_names[int(label)] for label in result.similarity_labels]
    ax.set_yticks(range(n_images), [f"{name}{' (held out)' if name in held_out else ''}" for name in names], fontsize=8)
    for label, name in zip(ax.get_yticklabels(), names):
        if name in held_out:
            label.set_color(_HELD_OUT_COLOR)
    ax.tick_params(axis="y", pad=44)  # room for the thumbnails between the names and the matrix
    pixels = np.asarray(result.similarity_images)
    zoom = 1.4 * 28 / max(pixels.shape[1], 1)
    for i, thumbnail in enumerate(pixels):
        thumbnail = thumbnail[..., 0] if thumbnail.shape[-1] == 1 else thumbnail
        box = OffsetImage(thumbnail, cmap="gray", zoom=zoom, interpolation="nearest")
        ax.add_artist(AnnotationBbox(box, (-0.5, i), xybox=(-22, 0), xycoords="data", boxcoords="offset points",
                                     frameon=False, annotation_clip=False))
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="cosine similarity")
    ax.set_title("one test image per class (rows) vs the class captions (columns)", fontsize=9)
    return figure_to_data_uri(fig)


def _cross_modal_heatmap(result: Any) -> str:
    table = result.cross_modal.pivot(index="image_layer", columns="text_stage", values="cka")
    table = table.loc[list(dict.fromkeys(result.cross_modal["image_layer"])), list(dict.fromkeys(result.cross_modal["text_stage"]))]
    fig, ax = plt.subplots(figsize=(4.6, 0.45 * len(table) + 1.8))
    sns.heatmap(table, ax=ax, vmin=0, vmax=1, cmap="magma", annot=True, fmt=".2f", annot_kws={"fontsize": 8},
                cbar_kws={"label": "linear CKA"})
    ax.set_xlabel("text stage (each image's class captions)")
    ax.set_ylabel("image layer")
    ax.tick_params(axis="x", rotation=20, labelsize=8)
    ax.tick_params(axis="y", rotation=0, labelsize=8)
    return figure_to_data_uri(fig)


def captions_section(result: Any, *, title: str = "Images and captions", notes: str = "") -> Section:
    """Build the section from a zero-shot experiment's result.

    Parameters
    ----------
    result
        A ``probe.study.CaptionExperiment`` (from ``clip_zero_shot_experiment``) or anything with its
        attributes: ``to_frame()`` (columns images, method, candidates, accuracy, chance, n_test),
        ``similarity``, ``similarity_images``, ``similarity_labels``, ``captions``, ``class_names``,
        ``held_out_classes``, ``seen_classes``, ``image_cka`` and ``text_cka`` (``analyses.SimilarityMatrix``),
        ``cross_modal`` (columns image_layer, text_stage, cka), ``image_text_cka``, ``dataset``, ``text_encoder``.
    title
        Section title.
    notes
        One paragraph of plain text shown under the introduction (e.g. how it was trained).
    """
    frame = result.to_frame()
    accuracy = frame[["images", "method", "candidates", "accuracy", "chance", "n_test", "n_train"]]
    items = [
        dict(title="Zero-shot accuracy against a linear probe", uri=_accuracy_bars(accuracy),
             caption="Zero-shot: each test image takes the class whose caption embedding (mean over the templates) is "
                     "nearest. Linear probe: logistic regression trained on the same frozen image embeddings with the "
                     "classes' labels. Dotted lines: chance.",
             table=table_html(accuracy, float_format="{:.3f}")),
        dict(title="Image–text similarity", uri=_similarity_figure(result),
             caption="Cosine similarity of image and caption embeddings; the largest in each row is in bold. Held-out "
                     "classes (never trained on, neither images nor captions) are in red."),
        dict(title="Image encoder: CKA between layers", uri=_matrix_heatmap(result.image_cka),
             caption="Linear CKA between the image encoder's layers over test images."),
        dict(title="Text side: CKA between stages", uri=_matrix_heatmap(result.text_cka),
             caption=f"Linear CKA over every (class, template) caption: the {result.text_encoder} features, the "
                     "projection's hidden layer and the caption embedding."),
        dict(title="Across the modalities", uri=_cross_modal_heatmap(result),
             caption="Linear CKA between an image layer's response to each test image and a text stage's output for "
                     f"that image's class. Image embedding vs class caption embedding: {result.image_text_cka:.3f}."),
    ]
    seen = frame[(frame["images"] == "seen") & (frame["candidates"] == "seen names")].set_index("method")["accuracy"]
    held = frame[(frame["images"] == "held-out") & (frame["candidates"] == "held-out names")].set_index("method")
    summary = (f"zero-shot {seen.get('zero-shot', float('nan')):.3f} vs linear probe "
               f"{seen.get('linear probe', float('nan')):.3f} on seen classes")
    if not held.empty:
        summary += (f"; {held['accuracy'].get('zero-shot', float('nan')):.3f} on held-out "
                    f"{', '.join(result.held_out_classes)} (chance {held['chance'].iloc[0]:.3f})")
    body = render_fragment("sections/captions.html.j2", items=items, notes=notes, dataset=result.dataset,
                           text_encoder=result.text_encoder, seen=", ".join(result.seen_classes),
                           held_out=", ".join(result.held_out_classes))
    return Section(title, body, summary=summary)
