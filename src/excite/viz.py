"""Pictures of where a network looks: :func:`visualize` and :func:`grad_cam`.

``visualize(RUN_DIR | MODEL | module, out_dir, data=..., method="gates" | "gradcam")``
runs a few validation samples through the model and writes labelled figures (sample,
true and predicted class, stage) into ``out_dir``:

=========  =============================================================================
kind       files
=========  =============================================================================
image      ``{method}.png``: one row per sample: the input, then each stage's map
           overlaid as a heatmap (upsampled to the input size)
video      ``{method}-sample{i}.png``: a strip of frames (columns), the input and each
           stage's per-frame heatmaps (rows); ``{method}-sample{i}.gif``: the same
           panels side by side, animated over all frames
volume     ``{method}-sample{i}.png``: three orthogonal mid-slices (axial, coronal,
           sagittal: columns) of the input and each stage's map (rows)
signal     ``{method}.png``: one row per sample: the signal, then each stage's map as a
           coloured band under it
=========  =============================================================================

plus, for ``method="gates"`` when the model has channel gates (SE, CBAM's M_c, ECA, ...),
``channel-gates.png``: per stage, the mean gate of every channel for each class over up
to ``gate_samples`` validation samples (the analysis of the SENet paper's Figure 6: early
stages gate every class alike, late ones per class).

The maps: with ``"gates"``, the spatial attention each stage computes (the last
attention module in the stage that has a spatial map; recorded by
:func:`excite.capture_attention`; per-axis gates are multiplied and channel-resolved
maps averaged over channels; stages whose map has shrunk to one position are left out;
channel-only families have no spatial maps and get ``channel-gates.png`` only). With
``"gradcam"``, :func:`grad_cam` on the last stage, for any model, with or without
attention. Each heatmap is min-max scaled for display; its label gives the map's real
range.

Sizes (matplotlib, Agg, ``dpi = 100``): every panel is ``PANEL_INCHES`` square (signal
panels twice as wide), plus a ``TITLE_INCHES`` band on top, so an image figure of S
samples and M maps is ``(1 + M) * 200`` x ``S * 200 + 80`` pixels. GIF frames are
``(1 + M) * GIF_PANEL`` x ``GIF_PANEL + GIF_HEADER`` pixels. Every file is written to a
temporary file in ``out_dir`` and moved into place (``os.replace``).
"""

from __future__ import annotations

import dataclasses
import functools
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from excite.capture import capture_attention
from excite.checks import check_bool, check_choice, check_positive_int
from excite.data import load_splits
from excite.data.registry import get_spec
from excite.engine.checkpoint import atomic_write
from excite.errors import ExciteError, require
from excite.exporting import eval_mode
from excite.models import create_model, list_models
from excite.runs import custom_parts, load_run

__all__ = [
    "DPI",
    "KINDS",
    "METHODS",
    "PANEL_INCHES",
    "TITLE_INCHES",
    "VisualizeResult",
    "grad_cam",
    "stage_modules",
    "visualize",
]

METHODS = ("gates", "gradcam")
KINDS = ("signal", "image", "video", "volume")
DPI = 100
PANEL_INCHES = 2.0
TITLE_INCHES = 0.8
GATE_PANEL_INCHES = (4.0, 3.0)
GIF_PANEL = 128
GIF_HEADER = 20
GIF_FRAME_MS = 200
MAX_STRIP_FRAMES = 8
_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


# --------------------------------------------------------------------------- stages


def stage_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's stages as ``(name, module)``, in forward order.

    excite's ResNets give ``layer1 … layerS`` (``model.stages()``), X3D ``stages.0 …``
    (its ``stages`` Sequential); any other model its top-level children that hold
    parameters (a user's network: its blocks as it registered them).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    names = {id(m): n for n, m in model.named_modules()}
    stages = getattr(model, "stages", None)
    if isinstance(stages, nn.Sequential):
        return [(names[id(m)], m) for m in stages]
    if callable(stages):
        found = stages()
        if isinstance(found, Sequence) and all(isinstance(m, nn.Module) for m in found):
            return [(names[id(m)], m) for m in found]
    return [(n, m) for n, m in model.named_children() if any(True for _ in m.parameters())]


def _stage_of(name: str, stages: Sequence[str]) -> str | None:
    return next((s for s in stages if name == s or name.startswith(s + ".")), None)


# --------------------------------------------------------------------------- Grad-CAM


def grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    *,
    target: int | Sequence[int] | torch.Tensor | None = None,
    layer: str | None = None,
) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization", ICCV 2017, eq. 1-2) at any rank.

    For the feature maps A^k (N, K, *s) of ``layer`` and the class score y^c:
    ``alpha_k^c = mean_s dy^c / dA^k`` and ``L^c = ReLU(sum_k alpha_k^c A^k)``, upsampled
    (linear / bilinear / trilinear) to the input's spatial size and divided by its
    per-sample maximum (an all-zero map stays zero)::

        x ── model ─┬─ ... ─ layer ─ A ─ ... ─ y^c
                    └── dy^c/dA ─ mean_s ─ alpha ─ ReLU(Σ_k alpha_k A^k) ─ upsample ─ / max

    Args:
        model: a classifier (N, C, *spatial) -> (N, classes); it runs in eval mode (its
            train/eval flags are restored afterwards).
        x: the input batch (N, C, *spatial), 1 to 3 spatial axes.
        target: the class c per sample (an int for all, or N ints); None: the predicted class.
        layer: the module whose output is A (a name from ``model.named_modules()``);
            None: the last stage (:func:`stage_modules`).

    Returns:
        The maps, (N, 1, *spatial) in [0, 1], float32.

    Raises:
        TypeError: ``model`` or ``x`` of the wrong type.
        ValueError: ``x`` without 1 to 3 spatial axes; an unknown ``layer``; a ``target``
            of the wrong length or out of range; a layer output without spatial axes.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point torch.Tensor, got {x!r:.60}")
    if not 3 <= x.ndim <= 5:
        raise ValueError(f"x must be (N, C, *spatial) with 1 to 3 spatial axes, got shape {tuple(x.shape)}")
    module = _target_layer(model, layer)
    seen: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda m, a, out: seen.append(out))
    try:
        with eval_mode(model), torch.enable_grad():
            logits = model(x)
    finally:
        handle.remove()
    if not seen or not isinstance(seen[-1], torch.Tensor):
        raise ValueError(f"layer {layer!r} did not produce a tensor in the forward pass")
    a = seen[-1]
    if a.ndim < 3:
        raise ValueError(f"Grad-CAM needs a layer with spatial axes, got output shape {tuple(a.shape)}")
    classes = _classes(target, logits)
    score = logits.gather(1, classes[:, None]).sum()
    (grads,) = torch.autograd.grad(score, a)
    axes = tuple(range(2, a.ndim))
    alpha = grads.mean(axes, keepdim=True)
    cam = F.relu((alpha * a).sum(1, keepdim=True)).detach().float()
    cam = F.interpolate(cam, size=tuple(x.shape[2:]), mode=_MODES[x.ndim - 2], align_corners=False)
    peak = cam.flatten(1).amax(1).clamp_min(torch.finfo(cam.dtype).tiny)
    return cam / peak.reshape(-1, *([1] * (cam.ndim - 1)))


def _target_layer(model: nn.Module, layer: str | None) -> nn.Module:
    if layer is None:
        stages = stage_modules(model)
        if not stages:
            raise ValueError(f"{type(model).__name__} has no stages; pass layer=<module name>")
        return stages[-1][1]
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a module name (str) or None, got {layer!r}")
    try:
        return model.get_submodule(layer)
    except AttributeError:
        raise ValueError(f"layer {layer!r} is not a module of {type(model).__name__}") from None


def _classes(target: object, logits: torch.Tensor) -> torch.Tensor:
    n, k = logits.shape[0], logits.shape[1]
    if target is None:
        return logits.detach().argmax(1)
    if isinstance(target, int) and not isinstance(target, bool):
        classes = torch.full((n,), target, dtype=torch.long)
    else:
        classes = torch.as_tensor(target, dtype=torch.long).reshape(-1)
    if classes.numel() != n:
        raise ValueError(f"target must be one class or {n} classes (one per sample), got {classes.numel()}")
    if bool(((classes < 0) | (classes >= k)).any()):
        raise ValueError(f"target classes must be in [0, {k}), got {classes.tolist()}")
    return classes.to(logits.device)


# --------------------------------------------------------------------------- maps


@dataclasses.dataclass
class _Map:
    """One heatmap per sample (N, 1, *input spatial) and what to call it."""

    label: str
    values: torch.Tensor
    low: torch.Tensor  # (N,): each sample's map minimum, before display scaling
    high: torch.Tensor  # (N,): and maximum


def _spatial_view(value: torch.Tensor | tuple[torch.Tensor, ...], ndim: int) -> torch.Tensor | None:
    """A recorded map as (N, 1, *spatial) for an input of ``ndim`` dims, or None when it
    has no spatial layout (a channel gate, non-local affinities, SK's branch weights).

    Per-axis gates (a tuple) are multiplied, as the families apply them; a map with
    channels is averaged over them.
    """
    if isinstance(value, tuple):
        try:
            value = functools.reduce(torch.mul, value)
        except RuntimeError:  # gates that do not broadcast into one map
            return None
    if value.ndim != ndim or all(s == 1 for s in value.shape[2:]):
        return None
    return value.mean(1, keepdim=True)


def _upsample(values: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    values = values.float()
    if tuple(values.shape[2:]) == tuple(size):
        return values
    return F.interpolate(values, size=tuple(size), mode=_MODES[len(size)], align_corners=False)


def _gate_maps(model: nn.Module, x: torch.Tensor) -> tuple[list[_Map], torch.Tensor, dict[str, torch.Tensor]]:
    """Per stage, the last spatial map; plus the logits and every channel gate."""
    stages = [n for n, _ in stage_modules(model)]
    with capture_attention(model) as maps, torch.no_grad():
        logits = model(x)
    last: dict[str, tuple[str, torch.Tensor]] = {}
    for name, value in maps.items():
        view = _spatial_view(value, x.ndim)
        stage = _stage_of(name, stages) or name
        if view is not None:
            last[stage] = (name, view)
    out = []
    for stage, (name, view) in last.items():
        out.append(_Map(f"{stage}\n{_short(name, stage)}", _upsample(view, x.shape[2:]),
                        *_extremes(view)))
    return out, logits, maps.channel()


def _short(name: str, stage: str) -> str:
    rest = name[len(stage) + 1:] if name.startswith(stage + ".") else name
    return rest or name


def _gradcam_maps(model: nn.Module, x: torch.Tensor) -> tuple[list[_Map], torch.Tensor]:
    stages = stage_modules(model)
    cam = grad_cam(model, x)
    with torch.no_grad():
        logits = model(x)
    name = stages[-1][0] if stages else "last stage"
    return [_Map(f"Grad-CAM\n{name}", cam, *_extremes(cam))], logits


def _extremes(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = values.detach().float().cpu().flatten(1)
    return flat.amin(1), flat.amax(1)


# --------------------------------------------------------------------------- drawing


def _mpl() -> tuple[Any, Any]:
    require("matplotlib", extra="train", purpose="drawing attention maps")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    return Figure, FigureCanvasAgg


def _figure(width: float, height: float) -> Any:
    figure_cls, canvas_cls = _mpl()
    fig = figure_cls(figsize=(width, height), dpi=DPI)
    canvas_cls(fig)
    return fig


def _save_png(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return atomic_write(path, lambda f: f.write(buf.getvalue()))


def _norm(a: np.ndarray) -> np.ndarray:
    low, high = float(a.min()), float(a.max())
    return (a - low) / (high - low) if high > low else np.zeros_like(a)


def _base(x: torch.Tensor) -> np.ndarray:
    """(C, *spatial) -> a displayable array: RGB (…, 3) for 3 channels, else the channel mean."""
    x = x.detach().float().cpu()
    if x.shape[0] == 3:
        return _norm(x.movedim(0, -1).numpy())
    return _norm(x.mean(0).numpy())


def _show(ax: Any, base: np.ndarray, heat: np.ndarray | None) -> None:
    ax.imshow(base, cmap=None if base.ndim == 3 else "gray", interpolation="nearest")
    if heat is not None:
        ax.imshow(_norm(heat), cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0, interpolation="bilinear")
    ax.set_xticks([])
    ax.set_yticks([])


def _range(m: _Map, i: int) -> str:
    return f"[{float(m.low[i]):.2f}, {float(m.high[i]):.2f}]"


def _sample_label(i: int, y: int, pred: int, names: Sequence[str]) -> str:
    def name(k: int) -> str:  # a model with more outputs than the data has classes
        return names[k] if 0 <= k < len(names) else str(k)

    return f"sample {i}: true {name(y)}, pred {name(pred)}"


def _draw_images(path: Path, x: torch.Tensor, maps: list[_Map], labels: list[str], title: str) -> Path:
    n, cols = x.shape[0], 1 + len(maps)
    fig = _figure(cols * PANEL_INCHES, n * PANEL_INCHES + TITLE_INCHES)
    fig.suptitle(title, fontsize=10)
    top = 1 - TITLE_INCHES / (n * PANEL_INCHES + TITLE_INCHES)
    grid = fig.add_gridspec(n, cols, left=0.02, right=0.98, bottom=0.01, top=top, wspace=0.05, hspace=0.35)
    for i in range(n):
        base = _base(x[i])
        ax = fig.add_subplot(grid[i, 0])
        _show(ax, base, None)
        ax.set_title(labels[i], fontsize=7)
        for j, m in enumerate(maps, start=1):
            ax = fig.add_subplot(grid[i, j])
            _show(ax, base, m.values[i, 0].numpy())
            ax.set_title(f"{m.label} {_range(m, i)}" if i == 0 else _range(m, i), fontsize=7)
    return _save_png(fig, path)


def _draw_signals(path: Path, x: torch.Tensor, maps: list[_Map], labels: list[str], title: str) -> Path:
    n, cols = x.shape[0], 1 + len(maps)
    width = 2 * PANEL_INCHES
    fig = _figure(cols * width, n * PANEL_INCHES + TITLE_INCHES)
    fig.suptitle(title, fontsize=10)
    top = 1 - TITLE_INCHES / (n * PANEL_INCHES + TITLE_INCHES)
    grid = fig.add_gridspec(n, cols, left=0.03, right=0.98, bottom=0.04, top=top, wspace=0.12, hspace=0.45)
    for i in range(n):
        signal = x[i].detach().float().cpu().mean(0).numpy()
        for j in range(cols):
            ax = fig.add_subplot(grid[i, j])
            low, high = float(signal.min()), float(signal.max())
            pad = 0.1 * (high - low) + 1e-6
            if j:
                m = maps[j - 1]
                ax.imshow(_norm(m.values[i, 0].numpy())[None, :], cmap="jet", aspect="auto", alpha=0.6,
                          extent=(0, signal.size, low - pad, high + pad), vmin=0.0, vmax=1.0)
                ax.set_title(f"{m.label.replace(chr(10), ' ')} {_range(m, i)}" if i == 0
                             else _range(m, i), fontsize=7)
            else:
                ax.set_title(labels[i], fontsize=7)
            ax.plot(np.arange(signal.size) + 0.5, signal, color="black", linewidth=0.8)
            ax.set_xlim(0, signal.size)
            ax.set_ylim(low - pad, high + pad)
            ax.tick_params(labelsize=6)
    return _save_png(fig, path)


def _frames(t: int) -> list[int]:
    if t <= MAX_STRIP_FRAMES:
        return list(range(t))
    return sorted({round(k * (t - 1) / (MAX_STRIP_FRAMES - 1)) for k in range(MAX_STRIP_FRAMES)})


def _draw_slices(path: Path, x: torch.Tensor, maps: list[_Map], i: int, label: str,
                 columns: Sequence[tuple[str, Any]]) -> Path:
    """One 3D sample (C, A, B, D) as 2D slices: ``columns`` are (title, slicer) pairs that
    cut a (..., A, B, D) tensor to (..., rows, cols); the input and each map are rows."""
    rows, cols = 1 + len(maps), len(columns)
    height = rows * PANEL_INCHES + TITLE_INCHES
    fig = _figure(cols * PANEL_INCHES, height)
    fig.suptitle(label, fontsize=10)
    grid = fig.add_gridspec(rows, cols, left=0.02, right=0.98, bottom=0.01,
                            top=1 - TITLE_INCHES / height, wspace=0.05, hspace=0.3)
    for c, (title, cut) in enumerate(columns):
        base = _base(cut(x))
        for r in range(rows):
            ax = fig.add_subplot(grid[r, c])
            m = maps[r - 1] if r else None
            _show(ax, base, None if m is None else cut(m.values[i, 0]).numpy())
            if r == 0:
                ax.set_title(title, fontsize=8)
            elif c == 0:  # one line above the row: stage, module, the map's range
                box = ax.get_position()
                fig.text(0.5, box.y1 + 0.06 / height, f"{m.label.replace(chr(10), ': ')}  {_range(m, i)}",
                         ha="center", va="bottom", fontsize=8)
    return _save_png(fig, path)


def _draw_video_strip(path: Path, x: torch.Tensor, maps: list[_Map], i: int, label: str) -> Path:
    """One clip (C, T, H, W): up to ``MAX_STRIP_FRAMES`` frames as columns."""
    columns = [(f"frame t={t}", lambda v, t=t: v[..., t, :, :]) for t in _frames(x.shape[1])]
    return _draw_slices(path, x, maps, i, label, columns)


def _draw_volume(path: Path, x: torch.Tensor, maps: list[_Map], i: int, label: str) -> Path:
    """One volume (C, D, H, W): its axial, coronal and sagittal mid-slices as columns."""
    d, h, w = x.shape[1:]
    columns = [("axial (mid D)", lambda v: v[..., d // 2, :, :]),
               ("coronal (mid H)", lambda v: v[..., :, h // 2, :]),
               ("sagittal (mid W)", lambda v: v[..., :, :, w // 2])]
    return _draw_slices(path, x, maps, i, label, columns)


def _draw_gif(path: Path, x: torch.Tensor, maps: list[_Map], i: int, label: str) -> Path:
    """One sample (C, T, H, W) animated over T: input and each map side by side."""
    require("PIL", extra="train", purpose="writing animated GIFs")
    import matplotlib
    from PIL import Image, ImageDraw

    jet = matplotlib.colormaps["jet"]
    names = ["input", *(m.label.split("\n")[0] for m in maps)]
    frames = []
    for t in range(x.shape[1]):
        base = _base(x[:, t])
        rgb = base if base.ndim == 3 else np.repeat(base[..., None], 3, axis=-1)
        panels = [rgb]
        for m in maps:
            heat = jet(_norm(m.values[i, 0, t].numpy()))[..., :3]
            panels.append(0.55 * rgb + 0.45 * heat)
        canvas = Image.new("RGB", (len(panels) * GIF_PANEL, GIF_PANEL + GIF_HEADER), "white")
        draw = ImageDraw.Draw(canvas)
        for k, (panel, name) in enumerate(zip(panels, names)):
            image = Image.fromarray((np.clip(panel, 0, 1) * 255).astype(np.uint8))
            canvas.paste(image.resize((GIF_PANEL, GIF_PANEL), Image.BILINEAR), (k * GIF_PANEL, GIF_HEADER))
            draw.text((k * GIF_PANEL + 3, GIF_HEADER + 2), name, fill="white")
        draw.text((3, 4), f"{label}  t={t}", fill="black")
        frames.append(canvas.convert("P", palette=Image.ADAPTIVE))
    return atomic_write(path, lambda f: frames[0].save(
        f, format="GIF", save_all=True, append_images=frames[1:], duration=GIF_FRAME_MS, loop=0))


def _draw_channel_gates(path: Path, gates: Mapping[str, torch.Tensor], labels: torch.Tensor,
                        names: Sequence[str], stages: Sequence[str], title: str) -> Path:
    """Per stage, the mean channel gate per class (SENet Fig. 6)."""
    last: dict[str, tuple[str, torch.Tensor]] = {}
    for name, value in gates.items():
        last[_stage_of(name, stages) or name] = (name, value)
    cols = len(last)
    width, height = GATE_PANEL_INCHES
    fig = _figure(cols * width, height + TITLE_INCHES)
    fig.suptitle(title, fontsize=10)
    grid = fig.add_gridspec(1, cols, left=0.06 / cols + 0.02, right=0.98, bottom=0.16,
                            top=1 - TITLE_INCHES / (height + TITLE_INCHES), wspace=0.25)
    present = sorted(set(labels.tolist()))
    for j, (stage, (name, value)) in enumerate(last.items()):
        ax = fig.add_subplot(grid[0, j])
        channels = np.arange(value.shape[1])
        for k in present:
            ax.plot(channels, value[labels == k].mean(0).numpy(), linewidth=0.9, label=names[k])
        ax.set_title(f"{stage}: {_short(name, stage)}", fontsize=8)
        ax.set_xlabel("channel index", fontsize=7)
        ax.tick_params(labelsize=6)
        if j == 0:
            ax.set_ylabel("mean gate", fontsize=7)
            ax.legend(fontsize=6, loc="lower left")
    return _save_png(fig, path)


# --------------------------------------------------------------------------- entry point


@dataclasses.dataclass
class VisualizeResult:
    """What :func:`visualize` wrote.

    Attributes:
        files: the written files, in order.
        kind: "signal", "image", "video" or "volume".
        method: "gates" or "gradcam".
        maps: the label of every map drawn (stage and module).
        samples: how many samples are drawn.
    """

    files: list[Path]
    kind: str
    method: str
    maps: list[str]
    samples: int


@dataclasses.dataclass
class _Source:
    """What to draw from: the model (None until built, for a model name) and its data."""

    model: nn.Module | None
    title: str
    data: str | None
    data_dir: str | None
    data_options: dict[str, Any]
    seed: int
    val_fraction: float
    default_out: Path | None
    custom_data: str | None = None


def _load_source(source: object, checkpoint: str) -> _Source:
    if isinstance(source, nn.Module):
        return _Source(source, type(source).__name__, None, None, {}, 0, 0.2, None)
    if not isinstance(source, (str, Path)):
        raise TypeError(f"source must be a run directory, a model name or an nn.Module, got {source!r}")
    path = Path(source)
    if path.is_dir():
        model, config = load_run(path, checkpoint=checkpoint)
        title = f"{config.model} + {config.attention} ({path.name}, {checkpoint})"
        custom_data = custom_parts(path).get("custom_data")
        return _Source(model, title, None if custom_data else config.data, config.data_dir,
                       dict(config.data_options), config.seed, config.val_fraction,
                       path / f"visualize-{checkpoint}", custom_data)
    if isinstance(source, str) and source in list_models():
        return _Source(None, source, None, None, {}, 0, 0.2, None)
    raise ValueError(
        f"source must be a run directory or a registered model name, got {str(source)!r} "
        f"(no such directory; models: {', '.join(list_models())})"
    )


def _kind(kind: str | None, rank: int, data: str | None) -> str:
    if kind is not None:
        check_choice(kind, KINDS, name="kind")
        expected = {"signal": 1, "image": 2, "video": 3, "volume": 3}[kind]
        if expected != rank:
            raise ValueError(f"kind {kind!r} needs {expected} spatial axes, the inputs have {rank}")
        return kind
    if rank == 1:
        return "signal"
    if rank == 2:
        return "image"
    if data is not None:
        return "video" if get_spec(data).kind == "video" else "volume"
    raise ValueError("3D inputs are video or volumes: pass kind='video' or kind='volume'")


def visualize(
    source: str | Path | nn.Module,
    out_dir: str | Path | None = None,
    *,
    data: str | None = None,
    data_dir: str | Path | None = None,
    data_options: Mapping[str, Any] | None = None,
    inputs: torch.Tensor | None = None,
    labels: Sequence[int] | torch.Tensor | None = None,
    class_names: Sequence[str] | None = None,
    samples: int = 8,
    method: str = "gates",
    kind: str | None = None,
    checkpoint: str = "best",
    attention: str | None = None,
    gate_samples: int = 256,
    overwrite: bool = False,
) -> VisualizeResult:
    """Draw where a model's attention (or Grad-CAM) looks, for a few samples.

    Args:
        source: a run directory (its best/last weights, data and options), a registered
            model name (untrained weights, built for ``data``), or an ``nn.Module``.
        out_dir: the folder for the pictures; default ``RUN_DIR/visualize-<checkpoint>``
            for a run (required otherwise).
        data: a dataset name (``excite datasets``); default: the run's. Its validation
            split supplies the samples.
        data_dir: the folder of a file-backed dataset; default: the run's.
        data_options: dataset options; default: the run's own when ``data`` is the run's.
        inputs: a batch (N, C, *spatial) to draw instead of a dataset (with ``labels``).
        labels: the true classes of ``inputs``.
        class_names: names of the classes (default: the dataset's, or "0", "1", ...).
        samples: how many samples to draw (the first ones of the validation split).
        method: "gates" (the attention maps) or "gradcam" (Grad-CAM on the last stage).
        kind: "signal", "image", "video" or "volume"; default: by rank and, for 3D, the
            dataset's kind (required for 3D ``inputs``).
        checkpoint: "best" or "last", for a run directory.
        attention: for a model name: the attention family to build it with (default:
            the model's own, none for most).
        gate_samples: validation samples averaged per class in ``channel-gates.png``.
        overwrite: replace pictures already in ``out_dir``; by default they are an error.

    Returns:
        A :class:`VisualizeResult` listing the files written.

    Raises:
        TypeError, ValueError: a bad argument (named in the message); ``method="gates"``
            for a model without attention maps (use "gradcam").
        ExciteError: a run directory without weights; files in the way.
    """
    check_choice(method, METHODS, name="method")
    check_positive_int(samples, name="samples")
    check_positive_int(gate_samples, name="gate_samples")
    check_bool(overwrite, name="overwrite")
    src = _load_source(source, checkpoint)
    if out_dir is None and src.default_out is None:
        raise ValueError("out_dir is required unless source is a run directory")
    out = Path(out_dir) if out_dir is not None else src.default_out
    x, y, names, gate_x, gate_y, data_name = _samples(src, data, data_dir, data_options, inputs, labels,
                                                      class_names, samples, gate_samples)
    if src.model is None:  # a model name: build it for the data
        options = {} if attention is None else {"attention": attention}
        src.model = create_model(str(source), num_classes=len(names), in_channels=x.shape[1],
                                 spatial_dims=x.ndim - 2, **options)
        name = getattr(src.model, "attention_name", None) or attention or "no attention"
        src.title = f"{source} + {name} (untrained)"
    elif attention is not None:
        raise ValueError("attention applies to a model name only; a run or module has its own")
    model = src.model
    kind = _kind(kind, x.ndim - 2, data_name)
    assert out is not None
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = x.to(device)
    gates: dict[str, torch.Tensor] = {}
    with eval_mode(model), torch.no_grad():
        try:
            model(x[:1])
        except RuntimeError as exc:  # another dataset's samples that the model cannot take
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"{src.title} cannot take samples of shape {tuple(x.shape[1:])}"
                             + (f" from {data_name}" if data_name else "") + f": {first}") from exc
    with eval_mode(model):
        if method == "gates":
            maps, logits, channel = _gate_maps(model, x)
            if not maps and not channel:
                raise ValueError(
                    f"{src.title} has no attention maps to draw; use method='gradcam' (--method gradcam)"
                )
            if channel:
                gates = _channel_gates(model, gate_x.to(device))
        else:
            maps, logits = _gradcam_maps(model, x)
    planned = _planned(kind, method, x.shape[0], samples=bool(maps), gates=bool(gates))
    clash = [p for p in planned if (out / p).exists()]
    if clash and not overwrite:
        raise ExciteError(f"{out} already holds {', '.join(clash)}; pass overwrite=True (--overwrite) "
                          "to replace them or choose another folder")
    preds = logits.argmax(1).tolist()
    x = x.detach().cpu()
    for m in maps:
        m.values = m.values.detach().cpu()
    row_labels = [_sample_label(i, int(t), p, names) for i, (t, p) in enumerate(zip(y.tolist(), preds))]
    title = f"{src.title}: {'attention maps' if method == 'gates' else 'Grad-CAM'}" + (
        f" on {data_name}" if data_name else "")
    files: list[Path] = []
    if maps and kind in ("image", "signal"):
        draw = _draw_images if kind == "image" else _draw_signals
        files.append(draw(out / f"{method}.png", x, maps, row_labels, title))
    elif maps:
        for i in range(x.shape[0]):
            label = f"{title}\n{row_labels[i]}"
            if kind == "video":
                files.append(_draw_video_strip(out / f"{method}-sample{i}.png", x[i], maps, i, label))
                files.append(_draw_gif(out / f"{method}-sample{i}.gif", x[i], maps, i, row_labels[i]))
            else:
                files.append(_draw_volume(out / f"{method}-sample{i}.png", x[i], maps, i, label))
    if gates:
        stages = [n for n, _ in stage_modules(model)]
        files.append(_draw_channel_gates(out / "channel-gates.png", gates, gate_y, names, stages,
                                         f"{src.title}: mean channel gate per class "
                                         f"({gate_x.shape[0]} samples)"))
    return VisualizeResult(files, kind, method, [m.label.replace("\n", " ") for m in maps], x.shape[0])


def _planned(kind: str, method: str, n: int, *, samples: bool, gates: bool) -> list[str]:
    """The file names :func:`visualize` will write."""
    names: list[str] = []
    if samples:
        names = [f"{method}.png"] if kind in ("image", "signal") else [
            f"{method}-sample{i}.{ext}" for i in range(n)
            for ext in (("png", "gif") if kind == "video" else ("png",))
        ]
    return names + (["channel-gates.png"] if gates else [])


def _channel_gates(model: nn.Module, x: torch.Tensor, batch: int = 64) -> dict[str, torch.Tensor]:
    with eval_mode(model), capture_attention(model) as maps, torch.no_grad():
        for start in range(0, x.shape[0], batch):
            model(x[start:start + batch])
    return maps.channel()


def _samples(
    src: _Source, data: str | None, data_dir: object, data_options: Mapping[str, Any] | None,
    inputs: torch.Tensor | None, labels: object, class_names: Sequence[str] | None,
    samples: int, gate_samples: int,
) -> tuple[torch.Tensor, torch.Tensor, list[str], torch.Tensor, torch.Tensor, str | None]:
    """(x, y, class names, gate x, gate y, dataset name) for the pictures."""
    if inputs is not None:
        if data is not None:
            raise ValueError("give either data or inputs, not both")
        if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point() or not 3 <= inputs.ndim <= 5:
            raise ValueError("inputs must be a floating-point batch (N, C, *spatial) with 1 to 3 spatial axes")
        if labels is None:
            raise ValueError("labels are required with inputs (the true class of each sample)")
        y = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        if y.numel() != inputs.shape[0]:
            raise ValueError(f"labels must have one class per input ({inputs.shape[0]}), got {y.numel()}")
        k = int(y.max()) + 1
        if src.model is not None and getattr(src.model, "num_classes", None):
            k = int(src.model.num_classes)
        names = list(class_names) if class_names else [str(i) for i in range(k)]
        return inputs[:samples], y[:samples], names, inputs[:gate_samples], y[:gate_samples], None
    name = data if data is not None else src.data
    if name is None and src.custom_data:
        raise ValueError(f"the run trained on custom data ({src.custom_data}) given to excite.engine.fit; "
                         "pass data= (--data) or inputs= with labels= to draw samples")
    if name is None:
        raise ValueError("data is required: the dataset whose validation samples to draw (or inputs=)")
    same = name == src.data
    options = dict(src.data_options) if same and data_options is None else dict(data_options or {})
    folder = data_dir if data_dir is not None else (src.data_dir if same else None)
    splits = load_splits(name, data_dir=folder, val_fraction=src.val_fraction, seed=src.seed, **options)
    val = splits.val
    count = min(len(val), max(samples, gate_samples))
    items = [val[i] for i in range(count)]
    x = torch.stack([torch.as_tensor(item[0]).float() for item in items])
    y = torch.as_tensor([int(item[1]) for item in items], dtype=torch.long)
    names = list(class_names) if class_names else [str(c) for c in splits.info.class_names]
    return x[:samples], y[:samples], names, x[:gate_samples], y[:gate_samples], name
