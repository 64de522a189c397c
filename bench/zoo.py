"""The model zoo of ``bench/models.py``: seven families built from configs, no weights downloaded.

Each ``ZooModel`` builds its module (fp32, seeded) and its inputs for a full-size run (the GPU)
or a tiny ``smoke`` run (the CPU, through the Triton interpreter). Every family comes from a
library that may be missing or of another release: ``build`` raises ``ModuleNotFoundError``
(or whatever the library raises) and the caller records that as the row's error.

Dropout and stochastic depth are 0: a training step must give the same gradients under every
backend, so that each can be checked against the fp32 reference.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

IMAGE = "image"  # input: (batch, 3, H, W) floating images; target: class labels
TOKENS = "tokens"  # input: (batch, seq) token ids; target: the next token (LM) or none

_stub_library: Any = None  # keeps the torchvision schema stubs registered (see below)


def import_torchvision() -> ModuleType:
    """``import torchvision``, also where its C++ ops cannot load.

    PyPI's torchvision wheel is built against the CUDA build of torch; with the CPU build (CI,
    the development machines) its ``_C`` library fails to load, and torchvision 0.28 then
    fails at import (it registers fake kernels for ``torchvision::nms``/``qnms`` whatever
    happened to ``_C``). Where ``_C`` does not load, this defines those two schemas first, so
    the import and every model in ``torchvision.models`` work; the detection ops stay
    unusable, as they would be without the stubs. timm and transformers import torchvision,
    so call this before importing either.
    """
    global _stub_library
    if "torchvision" in sys.modules:
        return sys.modules["torchvision"]
    spec = importlib.util.find_spec("torchvision")
    if spec is None:
        raise ModuleNotFoundError("torchvision is not installed (pip install torchvision)")
    libraries = []
    for location in spec.submodule_search_locations or ():
        libraries += glob.glob(os.path.join(location, "_C*.so"))
    loaded = False
    for path in libraries[:1]:
        try:
            torch.ops.load_library(path)
            loaded = True
        except Exception:  # noqa: BLE001 - built for another torch: use the stubs
            loaded = False
    if not loaded and _stub_library is None and not hasattr(torch.ops.torchvision, "nms"):
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _stub_library = lib
    return importlib.import_module("torchvision")


def import_library(name: str) -> ModuleType:
    """Import ``torchvision``, ``timm`` or ``transformers`` (the first two through
    ``import_torchvision``, which transformers' image utilities import as well)."""
    if importlib.util.find_spec("torchvision") is not None:
        import_torchvision()
    return importlib.import_module(name)


@dataclass(frozen=True)
class ZooModel:
    """One family: ``make(smoke)`` returns the fp32 module; inputs are described by ``kind``,
    ``batch``, ``size`` (image side or sequence length) and ``vocab`` for token models.

    ``head`` says what the loss of a training step is: ``"classes"`` (cross entropy of the
    logits against random labels), ``"lm"`` (next-token cross entropy over the logits) or
    ``"hidden"`` (for an encoder without a head: the mean square of each token's hidden state
    projected on a fixed ramp; a plain mean square of a LayerNorm output is constant).
    """

    name: str
    family: str
    library: str
    kind: str
    head: str
    make: Callable[[bool], nn.Module]
    full: dict[str, int]
    smoke: dict[str, int]

    def dims(self, smoke: bool) -> dict[str, int]:
        return self.smoke if smoke else self.full

    def shape(self, smoke: bool) -> str:
        d = self.dims(smoke)
        if self.kind == IMAGE:
            return f"{d['batch']}x3x{d['size']}x{d['size']}"
        return f"{d['batch']}x{d['size']}"

    def inputs(self, device: torch.device, smoke: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Seeded model input and training target (``None`` for ``head="hidden"``)."""
        d = self.dims(smoke)
        gen = torch.Generator().manual_seed(1234)
        if self.kind == IMAGE:
            x = torch.randn(d["batch"], 3, d["size"], d["size"], generator=gen)
            y = torch.randint(0, d["classes"], (d["batch"],), generator=gen)
            return x.to(device), y.to(device)
        ids = torch.randint(0, d["vocab"], (d["batch"], d["size"]), generator=gen)
        target = None if self.head == "hidden" else ids.roll(-1, dims=1)
        return ids.to(device), None if target is None else target.to(device)

    def output(self, out: Any) -> torch.Tensor:
        """The tensor a model call produces (logits or last hidden state)."""
        if isinstance(out, torch.Tensor):
            return out
        for key in ("logits", "last_hidden_state"):
            value = getattr(out, key, None)
            if value is not None:
                return value
        if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
            return out[0]
        raise TypeError(f"{self.name}: cannot find the output tensor in {type(out).__name__}")

    def loss(self, out: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """The training step's scalar loss, computed in fp32."""
        if self.head == "classes":
            return F.cross_entropy(out.float(), target)
        if self.head == "lm":
            return F.cross_entropy(out.float().flatten(0, 1), target.flatten())
        ramp = torch.linspace(-1.0, 1.0, out.shape[-1], device=out.device)
        return (out.float() * ramp).sum(-1).square().mean()


# ---- builders (imports happen here, so a missing library fails only its own families) ----


def _resnet18(smoke: bool) -> nn.Module:
    models = import_torchvision().models
    if smoke:
        from torchvision.models.resnet import BasicBlock, ResNet

        return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10)
    return models.resnet18(num_classes=1000)


def _mobilenet_v3_small(smoke: bool) -> nn.Module:
    models = import_torchvision().models
    if smoke:
        return models.mobilenet_v3_small(num_classes=10, dropout=0.0, width_mult=0.25)
    return models.mobilenet_v3_small(num_classes=1000, dropout=0.0)


def _convnext(smoke: bool) -> nn.Module:
    import_torchvision()
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    if smoke:
        blocks = [CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)]
        return ConvNeXt(blocks, stochastic_depth_prob=0.0, num_classes=10)
    # convnext_tiny's widths with half its depth in stage 3 (9 blocks instead of 27 total)
    blocks = [
        CNBlockConfig(96, 192, 2),
        CNBlockConfig(192, 384, 2),
        CNBlockConfig(384, 768, 4),
        CNBlockConfig(768, None, 1),
    ]
    return ConvNeXt(blocks, stochastic_depth_prob=0.0, num_classes=1000)


def _vit(smoke: bool) -> nn.Module:
    """timm's VisionTransformer, whose attention calls F.scaled_dot_product_attention."""
    timm_vit = import_library("timm.models.vision_transformer")
    if smoke:
        kw = dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=10)
    else:
        kw = dict(img_size=224, patch_size=16, embed_dim=384, depth=6, num_heads=6)
    model = timm_vit.VisionTransformer(drop_rate=0.0, drop_path_rate=0.0, **kw)
    for module in model.modules():  # SDPA even where timm's env switch turned it off
        if hasattr(module, "fused_attn"):
            module.fused_attn = True
    return model


def _hf_config(cls_name: str, attn: str | None, **kw: Any) -> Any:
    """A transformers config, with the attention implementation set through whichever
    spelling this release accepts."""
    cls = getattr(import_library("transformers"), cls_name)
    if attn is None:
        return cls(**kw)
    try:
        config = cls(attn_implementation=attn, **kw)
    except TypeError:
        config = cls(**kw)
    if getattr(config, "_attn_implementation", None) != attn:
        config._attn_implementation = attn
    return config


def _hf_model(cls_name: str, config: Any) -> nn.Module:
    cls = getattr(import_library("transformers"), cls_name)
    return cls(config)


def _gpt2(smoke: bool) -> nn.Module:
    dims = (1, 32, 2, 257, 64) if smoke else (6, 768, 12, 50257, 1024)
    layers, width, heads, vocab, positions = dims
    config = _hf_config(
        "GPT2Config",
        "eager",
        n_layer=layers,
        n_embd=width,
        n_head=heads,
        vocab_size=vocab,
        n_positions=positions,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        use_cache=False,
        bos_token_id=0,
        eos_token_id=0,
    )
    return _hf_model("GPT2LMHeadModel", config)


def _llama(smoke: bool) -> nn.Module:
    if smoke:
        dims = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1)
        dims.update(num_attention_heads=4, num_key_value_heads=2, vocab_size=128)
    else:
        dims = dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=6)
        dims.update(num_attention_heads=12, num_key_value_heads=4, vocab_size=32000)
    config = _hf_config(
        "LlamaConfig",
        "sdpa",
        max_position_embeddings=1024,
        attention_dropout=0.0,
        use_cache=False,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=None,
        **dims,
    )
    return _hf_model("LlamaForCausalLM", config)


def _bert(smoke: bool) -> nn.Module:
    if smoke:
        dims = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1)
        dims.update(num_attention_heads=2, vocab_size=128)
    else:
        dims = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=4)
        dims.update(num_attention_heads=12, vocab_size=30522)
    config = _hf_config(
        "BertConfig",
        None,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        max_position_embeddings=512,
        pad_token_id=0,
        **dims,
    )
    return _hf_model("BertModel", config)


def _image(batch: int, size: int, classes: int) -> dict[str, int]:
    return {"batch": batch, "size": size, "classes": classes}


def _tokens(batch: int, seq: int, vocab: int) -> dict[str, int]:
    return {"batch": batch, "size": seq, "vocab": vocab}


MODELS: tuple[ZooModel, ...] = (
    ZooModel("resnet18", "ResNet-18 (batch norm)", "torchvision", IMAGE, "classes",
             _resnet18, _image(32, 224, 1000), _image(2, 32, 10)),
    ZooModel("mobilenet_v3_small", "MobileNetV3-small (depthwise, hardswish, SE)",
             "torchvision", IMAGE, "classes", _mobilenet_v3_small, _image(32, 224, 1000),
             _image(2, 32, 10)),
    ZooModel("convnext", "ConvNeXt, tiny widths, 9 blocks (7x7 depthwise, LayerNorm, GELU)",
             "torchvision", IMAGE, "classes", _convnext, _image(32, 224, 1000),
             _image(2, 32, 10)),
    ZooModel("vit", "ViT-S/16, 6 layers (timm, SDPA)", "timm", IMAGE, "classes", _vit,
             _image(32, 224, 1000), _image(2, 32, 10)),
    ZooModel("gpt2", "GPT-2, 6 layers, eager attention, vocab 50257", "transformers", TOKENS,
             "lm", _gpt2, _tokens(8, 512, 50257), _tokens(2, 16, 257)),
    ZooModel("llama", "Llama-style, 6 layers (RoPE, GQA 12/4, RMSNorm, SwiGLU, SDPA)",
             "transformers", TOKENS, "lm", _llama, _tokens(8, 512, 32000),
             _tokens(2, 16, 128)),
    ZooModel("bert", "BERT-style encoder, 4 layers (SDPA where transformers picks it)",
             "transformers", TOKENS, "hidden", _bert, _tokens(8, 512, 30522),
             _tokens(2, 16, 128)),
)  # fmt: skip
BY_NAME = {m.name: m for m in MODELS}


def with_batch(model: ZooModel, batch: int) -> ZooModel:
    """``model`` with every config's batch size set to ``batch``."""
    return dataclasses.replace(
        model, full=dict(model.full, batch=batch), smoke=dict(model.smoke, batch=batch)
    )


def select(names: list[str]) -> list[ZooModel]:
    """The models named (all of them for an empty list), in zoo order.

    Raises ``ValueError`` on an unknown name, listing the known ones.
    """
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
    return [m for m in MODELS if not names or m.name in names]


def library_missing(model: ZooModel) -> str | None:
    """Why ``model``'s library cannot be imported here, or ``None`` when it can."""
    try:
        import_library(model.library)
    except Exception as exc:  # noqa: BLE001 - any import failure makes the family unusable
        return f"{model.library} is not importable: {type(exc).__name__}: {exc}"
    return None
