"""The study's ``captions`` analysis: what an image-text (CLIP-style) model of the study does with captions.

For each such model trained by the zoo (a run folder), the classes it trained on are read from its run
(``dataset_options.classes``); the others of its dataset are held out. Zero-shot accuracy on seen and
held-out classes is set against a supervised linear probe on the same image features, beside the
image-text similarity of a batch and the image-side, text-side and cross-modal CKA
(``probe.study.measure_captions``).
"""

from __future__ import annotations

from typing import Any, Sequence

import pandas as pd

import zoo
from probe.study._caption_experiments import measure_captions
from probe.study._context import StudyContext
from reports import Section, captions_section

__all__ = ["captions_analysis", "image_text_models"]


def image_text_models(ctx: StudyContext, models: Sequence[str] | str = "all") -> list[str]:
    """The study's image-text models (family ``"image-text"``), those named or all."""
    return [name for name, model in ctx.models.items()
            if getattr(model, "family", None) == "image-text" and (models == "all" or name in models)]


def _training_data(ctx: StudyContext, name: str) -> tuple[str, Any]:
    """The dataset a model's run trained on and the classes it kept (None: all of them)."""
    if name not in ctx.run_dirs:
        raise ValueError(f"model {name!r} is not a zoo run, so the classes it was trained on are unknown; give it "
                         "as run = \"RUN_FOLDER\" (with a train table to train it)")
    dataset, options = zoo.RunDir(ctx.run_dirs[name]).training_dataset()
    return dataset, options.get("classes")


def captions_analysis(ctx: StudyContext, *, models: Sequence[str] | str = "all", n_cka: int = 1000,
                      probe_per_class: int | str = "all") -> list[Section]:
    """Zero-shot classification by every image-text model of the study, on the classes it was trained on and
    on those held out of its training, against a linear probe on its image features.

    The table ``captions`` holds one row per model and read-out. A study without image-text models gets no
    section.
    """
    sections, frames, results = [], [], {}
    for name in image_text_models(ctx, models):
        dataset, classes = _training_data(ctx, name)
        # the whole splits (the study's stimuli may be a subset): the probes train on one, all is scored on the other
        train_set, test_set = zoo.load_dataset(dataset, split="train"), zoo.load_dataset(dataset, split="test")
        every = list(range(train_set.info.n_classes))
        seen = every if classes is None else zoo.class_labels(train_set.info, classes)
        held = [label for label in every if label not in seen]
        result = measure_captions(ctx.models[name], train_set, test_set, seen, held, n_cka=n_cka, seed=ctx.seed,
                                  device=ctx.device, run_dir=ctx.run_dirs[name],
                                  probe_train_per_class=None if probe_per_class == "all" else probe_per_class)
        results[name] = result
        frames.append(result.to_frame().assign(model=name))
        held_words = f"held out of its training: {', '.join(result.held_out_classes)}" if held else "no class held out"
        sections.append(captions_section(result, title=f"Images and captions: {name}",
                                         notes=f"{name} was trained on {dataset} ({held_words})."))
    if not results:
        return []
    ctx.results["captions"] = results
    frame = pd.concat(frames)
    ctx.add_table("captions", frame[["model", *[c for c in frame.columns if c != "model"]]])
    return sections
