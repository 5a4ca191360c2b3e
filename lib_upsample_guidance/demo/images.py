"""PNG output for the demo and the bench: labelled image grids and simple line plots, drawn with Pillow.

Pillow is imported inside these functions only (WebUIs ship it with gradio; the core library never needs it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

PALETTE = [
    (31, 119, 180),
    (214, 39, 40),
    (44, 160, 44),
    (255, 127, 14),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
]


class MissingPillow(RuntimeError):
    """Pillow is not installed."""


def require_pillow():
    """Import and return PIL's (Image, ImageDraw, ImageFont), or raise MissingPillow with the fix."""
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingPillow(
            "[Upsample guidance] the demo and the quality bench write PNGs with Pillow, which is not "
            "installed: pip install pillow"
        ) from exc
    return Image, ImageDraw, ImageFont


def to_image(img: torch.Tensor, cell: int):
    """One image (3, H, W) in [-1, 1] as a PIL image scaled (nearest) so its longer side is ``cell`` px."""
    Image, _, _ = require_pillow()
    arr = ((img.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    pil = Image.fromarray(arr.copy(), "RGB")
    h, w = arr.shape[:2]
    s = cell / max(h, w)
    return pil.resize((max(1, round(w * s)), max(1, round(h * s))), Image.NEAREST)


def image_grid(
    rows: Sequence[tuple[str, torch.Tensor]],
    path: str | Path,
    *,
    cell: int = 96,
    title: str = "",
    label_width: int = 230,
) -> Path:
    """Write a grid PNG: one row per (label, images (n, 3, H, W)), each image scaled to ``cell`` px.

    Images of different sizes are shown at the same display size, so a 32 px and a 16 px image of the
    same scene line up; the label states the real size.
    """
    Image, ImageDraw, ImageFont = require_pillow()
    font = ImageFont.load_default()
    ncol = max(len(imgs) for _, imgs in rows)
    pad, head = 4, (22 if title else 4)
    width = label_width + ncol * (cell + pad) + pad
    height = head + len(rows) * (cell + pad) + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, 5), title, fill=(0, 0, 0), font=font)
    for r, (label, imgs) in enumerate(rows):
        y = head + r * (cell + pad)
        for li, line in enumerate(label.split("\n")):
            draw.text((pad, y + 4 + 13 * li), line, fill=(0, 0, 0), font=font)
        for c, img in enumerate(imgs):
            canvas.paste(to_image(img, cell), (label_width + c * (cell + pad), y))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def line_plot(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    size: tuple[int, int] = (640, 400),
    ylim: tuple[float, float] | None = None,
    logy: bool = False,
) -> Path:
    """Write a PNG line plot (markers at the data points) of named (xs, ys) series with a legend."""
    import math

    Image, ImageDraw, ImageFont = require_pillow()
    font = ImageFont.load_default()
    w, h = size
    left, right, top, bottom = 62, 150, 28, 42
    canvas = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    f = (lambda v: math.log10(v)) if logy else (lambda v: v)
    xs_all = [x for xs, _ in series.values() for x in xs]
    ys_all = [f(y) for _, ys in series.values() for y in ys if (y > 0 or not logy)]
    x0, x1 = min(xs_all), max(xs_all)
    y0, y1 = (f(ylim[0]), f(ylim[1])) if ylim else (min(ys_all), max(ys_all))
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + 1

    def px(x: float, y: float) -> tuple[float, float]:
        return (
            left + (x - x0) / (x1 - x0) * (w - left - right),
            h - bottom - (f(y) - y0) / (y1 - y0) * (h - top - bottom),
        )

    draw.rectangle([left, top, w - right, h - bottom], outline=(0, 0, 0))
    for i in range(5):
        xv = x0 + (x1 - x0) * i / 4
        yv = y0 + (y1 - y0) * i / 4
        xp = left + (w - left - right) * i / 4
        yp = h - bottom - (h - top - bottom) * i / 4
        draw.line([xp, h - bottom, xp, h - bottom + 4], fill=(0, 0, 0))
        draw.text(
            (xp - 12, h - bottom + 6),
            f"{xv:.0f}" if abs(xv) >= 100 else f"{xv:.3g}",
            fill=(0, 0, 0),
            font=font,
        )
        draw.line([left - 4, yp, left, yp], fill=(0, 0, 0))
        label = f"{10**yv:.3g}" if logy else f"{yv:.3g}"
        draw.text((4, yp - 6), label, fill=(0, 0, 0), font=font)
    draw.text((left + 30, 8), title, fill=(0, 0, 0), font=font)
    draw.text(((w - right + left) // 2 - 3 * len(xlabel), h - 16), xlabel, fill=(0, 0, 0), font=font)
    draw.text((4, top - 20), ylabel, fill=(0, 0, 0), font=font)
    for k, (name, (xs, ys)) in enumerate(series.items()):
        col = PALETTE[k % len(PALETTE)]
        pts = [px(x, y) for x, y in zip(xs, ys, strict=True) if (y > 0 or not logy)]
        if len(pts) > 1:
            draw.line(pts, fill=col, width=2)
        if len(pts) <= 40:
            for x, y in pts:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=col)
        ly = top + 14 * k
        draw.line([w - right + 8, ly + 6, w - right + 24, ly + 6], fill=col, width=3)
        draw.text((w - right + 28, ly), name, fill=(0, 0, 0), font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
