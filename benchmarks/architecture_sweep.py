"""Sweep: ``probe.record`` equals plain forward hooks on many third-party architectures, or refuses.

For every architecture (timm models with random weights at their smallest size and tiny inputs,
torchvision's Swin-T and ViT, and a Hugging Face BERT built from a tiny config), a few layers are
recorded with the default reduction and compared with a hand computation from torch forward hooks
that applies the reduction the layer's *expected* layout implies (written here from the
architecture, not asked of probe):

    channels-first (B, C, H, W)  -> mean over H, W        channels-last (B, H, W, C) -> mean over H, W
    tokens+N (B, N + T, D)       -> mean over the T tokens after the N prefix tokens (masked for BERT)
    vector (B, D)                -> as is

Probe's own layout must equal the expected one. Layers expected to be refused (outputs that do not
lead with the batch, 4-d outputs of unknown layout) must be refused with the clear error. One line
per architecture: layers recorded, layers refused, max |recorded - hand|; then the totals.

Usage::

    python benchmarks/architecture_sweep.py [--only NAME ...] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import probe  # noqa: E402

NOT_BATCH = "not per stimulus"  # refused: its first dimension is not the batch
AMBIGUOUS = "ambiguous"  # refused: a 4-d output whose layout cannot be told
REFUSALS = {NOT_BATCH: "its first dimension is not the batch", AMBIGUOUS: "cannot tell the layout"}
N_STIMULI, BATCH = 5, 2


def timm_model(name: str, **kwargs: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False, num_classes=10, **kwargs)

    return build


def torchvision_swin() -> nn.Module:
    from torchvision.models import swin_t

    return swin_t(num_classes=10)


def torchvision_vit() -> nn.Module:
    from torchvision.models import VisionTransformer

    return VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32)


def bert() -> nn.Module:
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    return BertModel(config)


def images(size: int) -> Callable[[], torch.Tensor]:
    return lambda: torch.randn(N_STIMULI, 3, size, size, generator=torch.Generator().manual_seed(0))


def sentences() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 64, (N_STIMULI, 9), generator=generator)
    mask = torch.ones_like(ids)
    for row, length in enumerate([9, 4, 7, 2, 9]):
        mask[row, length:] = 0
    return {"input_ids": ids * mask, "attention_mask": mask}


CF, CL, TOKENS, VECTOR = "channels-first", "channels-last", "tokens", "vector"

#: name -> (model factory, data factory, {layer: expected layout or refusal})
ARCHITECTURES: dict[str, tuple[Callable[[], nn.Module], Callable[[], Any], dict[str, str]]] = {
    "resnet10t": (timm_model("resnet10t"), images(32),
                  {"conv1": CF, "act1": CF, "layer2": CF, "global_pool": VECTOR}),
    "efficientnet_b0": (timm_model("efficientnet_b0"), images(32),
                        {"conv_stem": CF, "blocks.1": CF, "blocks.3.0.se": CF, "conv_head": CF}),
    "mobilenetv3_small_050": (timm_model("mobilenetv3_small_050"), images(32),
                              {"blocks.0": CF, "blocks.2.1": CF, "conv_head": CF, "classifier": VECTOR}),
    "convnext_atto": (timm_model("convnext_atto", conv_mlp=False), images(32),  # norm and MLP channels-last
                      {"stem": CF, "stages.1": CF, "stages.2.blocks.0.norm": CL, "stages.2.blocks.0.mlp": CL,
                       "stages.2.blocks.0": CF}),
    "regnetx_002": (timm_model("regnetx_002"), images(32), {"stem": CF, "s1": CF, "s2.b1": CF, "final_conv": CF}),
    "densenet121": (timm_model("densenet121"), images(32),
                    {"features.denseblock1": CF, "features.transition1": CF, "features.norm5": CF}),
    "vgg11": (timm_model("vgg11"), images(32), {"features.2": CF, "features.10": CF, "pre_logits": CF}),
    "vit_tiny": (timm_model("vit_tiny_patch16_224", img_size=32), images(32),
                 {"patch_embed": TOKENS, "blocks.0": "tokens+1", "blocks.11.attn": "tokens+1", "norm": "tokens+1"}),
    "vit_tiny_reg4": (timm_model("vit_tiny_patch16_224", img_size=32, reg_tokens=4), images(32),
                      {"blocks.1": "tokens+5", "blocks.2.mlp.fc1": "tokens+5", "norm": "tokens+5"}),
    "deit_tiny_distilled": (timm_model("deit_tiny_distilled_patch16_224", img_size=32), images(32),
                            {"blocks.0": "tokens+2", "blocks.11": "tokens+2", "norm": "tokens+2"}),
    "swin_tiny": (timm_model("swin_tiny_patch4_window7_224", img_size=64, window_size=4), images(64),
                  {"patch_embed": CL, "layers.0": CL, "layers.1.blocks.0.mlp": TOKENS, "layers.2.downsample": CL,
                   "norm": CL, "layers.1.blocks.0.attn": NOT_BATCH, "layers.0.blocks.1.attn.qkv": NOT_BATCH}),
    "mixer_s16": (timm_model("mixer_s16_224", img_size=32), images(32),
                  {"stem": TOKENS, "blocks.0": TOKENS, "blocks.3.mlp_channels": TOKENS, "norm": TOKENS}),
    "levit_128s": (timm_model("levit_128s", img_size=64), images(64),
                   {"stem": CF, "stages.0": TOKENS, "stages.1.downsample": TOKENS, "stages.2": TOKENS}),
    "coat_lite_tiny": (timm_model("coat_lite_tiny", img_size=64), images(64),
                       {"patch_embed1": TOKENS, "serial_blocks1.0": "tokens+1", "serial_blocks4.1": "tokens+1",
                        "norm4": "tokens+1", "crpe2": AMBIGUOUS}),
    "mobilevit_xxs": (timm_model("mobilevit_xxs", img_size=64), images(64),
                      {"stages.1": CF, "stages.2.1": CF, "final_conv": CF, "stages.2.1.transformer": NOT_BATCH,
                       "stages.3.1.transformer.0.attn": NOT_BATCH}),
    "pit_ti": (timm_model("pit_ti_224", img_size=64), images(64),
               {"patch_embed": CF, "transformers.0": CF, "transformers.2": CF, "norm": TOKENS}),
    "maxvit_nano_rw": (timm_model("maxvit_nano_rw_256", img_size=64), images(64),
                       {"stem": CF, "stages.0.blocks.0.attn_block": CL, "stages.1": CF, "norm": CF,
                        "stages.0.blocks.0.attn_grid.attn": NOT_BATCH}),
    "torchvision swin_t": (torchvision_swin, images(64),
                           {"features.0": CL, "features.3": CL, "norm": CL, "permute": CF}),
    "torchvision vit": (torchvision_vit, images(32),
                        {"conv_proj": CF, "encoder.layers.encoder_layer_0": "tokens+1", "encoder.ln": "tokens+1"}),
    "bert (transformers)": (bert, sentences,
                            {"embeddings": TOKENS, "encoder.layer.0": TOKENS, "": TOKENS, "pooler": VECTOR,
                             "embeddings.position_embeddings": NOT_BATCH}),
}


def hand_reduce(output: torch.Tensor, layout: str, mask: torch.Tensor | None) -> torch.Tensor:
    """The reduction a layout implies, written out."""
    if layout == CF:
        return output.mean(dim=tuple(range(2, output.dim())))
    if layout == CL:
        return output.mean(dim=tuple(range(1, output.dim() - 1)))
    if layout.startswith(TOKENS):
        prefix = int(layout.split("+")[1]) if "+" in layout else 0
        tokens = output[:, prefix:]
        if mask is None:
            return tokens.mean(dim=1)
        weights = mask[:, prefix:, None].float()
        return (tokens * weights).sum(dim=1) / weights.sum(dim=1)
    return output.reshape(len(output), -1)


def first_tensor(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    values = output.values() if isinstance(output, dict) else output
    return next(first_tensor(v) for v in values if isinstance(v, (torch.Tensor, dict, tuple, list)))


def hand_hooks(model: nn.Module, data: Any, expected: dict[str, str]) -> dict[str, np.ndarray]:
    """Plain forward hooks, batch by batch, each output reduced as its expected layout implies."""
    modules = dict(model.named_modules())
    kept: dict[str, list[torch.Tensor]] = {name: [] for name in expected}
    mask: list[torch.Tensor | None] = [None]

    def hook(name: str):
        return lambda module, args, output: kept[name].append(hand_reduce(first_tensor(output), expected[name], mask[0]))

    handles = [modules[name].register_forward_hook(hook(name)) for name in expected]
    try:
        with torch.no_grad():
            for start in range(0, N_STIMULI, BATCH):
                if isinstance(data, dict):
                    batch = {key: value[start : start + BATCH] for key, value in data.items()}
                    mask[0] = batch["attention_mask"]
                    model(**batch)
                else:
                    model(data[start : start + BATCH])
    finally:
        for handle in handles:
            handle.remove()
    return {name: torch.cat(values).numpy() for name, values in kept.items()}


def check_architecture(build: Callable[[], nn.Module], make_data: Callable[[], Any], expected: dict[str, str]):
    """(layers recorded, layers refused as expected, max |recorded - hand|); raises on any mismatch."""
    torch.manual_seed(0)
    model = build().eval()
    data = make_data()
    recordable = {name: layout for name, layout in expected.items() if layout not in REFUSALS}
    rec = probe.record(model, data, list(recordable), batch_size=BATCH, device="cpu", progress=False)
    found = {name: rec.reductions[name].layout for name in recordable}
    if found != recordable:
        raise AssertionError(f"layouts found {found}, expected {recordable}")
    reference = hand_hooks(model, data, recordable)
    difference = max(float(np.abs(rec[name] - reference[name]).max()) for name in recordable)
    refused = 0
    for name, why in expected.items():
        if why not in REFUSALS:
            continue
        try:
            probe.record(model, data, [name], batch_size=BATCH, device="cpu", progress=False)
        except ValueError as err:
            if REFUSALS[why] not in str(err) or repr(name) not in str(err):
                raise AssertionError(f"layer {name!r} refused with an unclear error: {err}") from err
            refused += 1
        else:
            raise AssertionError(f"layer {name!r} ({why}) was recorded instead of refused")
    return len(recordable), refused, difference


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="architectures to run (default all)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.backends.mha.set_fastpath_enabled(False)  # the hand hooks see what the recording sees
    names = args.only or list(ARCHITECTURES)
    totals = {"ok": 0, "failed": 0, "recorded": 0, "refused": 0}
    started = time.perf_counter()
    for name in names:
        build, make_data, expected = ARCHITECTURES[name]
        began = time.perf_counter()
        try:
            recorded, refused, difference = check_architecture(build, make_data, expected)
        except Exception as err:  # noqa: BLE001 - report and go on
            totals["failed"] += 1
            print(f"{name:24s} FAILED: {type(err).__name__}: {err}", flush=True)
            continue
        totals["ok"] += 1
        totals["recorded"] += recorded
        totals["refused"] += refused
        print(f"{name:24s} recorded {recorded}  refused {refused}  max |diff| {difference:.2e}  "
              f"({time.perf_counter() - began:.1f} s)", flush=True)
    print(f"{totals['ok']} of {len(names)} architectures equal plain forward hooks; {totals['recorded']} layers "
          f"recorded, {totals['refused']} refused with a clear error; {time.perf_counter() - started:.1f} s")
    return 0 if totals["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
