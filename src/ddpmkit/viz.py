"""Pictures: scatter strips and GIFs for 2-D data, image grids and strips, loss curves.

Inputs are numpy arrays in data space (points) or uint8 images [N, H, W, C] with any of
the data's channel counts: 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA. PNGs keep the alpha;
where a format or figure has none (GIF frames, matplotlib tables) images are shown
composited over white, as data.decode composites transparent sources.
Everything renders off-screen and writes PNG or GIF files, each through rundir.atomic_write (a
full disk leaves the earlier file or none, never part of one). Figures are matplotlib `Figure`s made
without pyplot: nothing global changes (a notebook keeps its backend), and matplotlib is
imported on the first drawing, not when a command starts.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from . import rundir

IMAGE_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}  # Pillow's mode of C channels
POINT_STYLE = dict(s=2, alpha=0.5, linewidths=0, color="#1f5fa8")


def _subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float], squeeze: bool = True):
    """(figure, axes) as pyplot.subplots gives them, on a figure pyplot does not manage: saved with
    savefig, never shown, freed with its last reference (its Agg canvas gives the renderer that
    measures text)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze)


def _save_figure(fig, path: Path, dpi: int) -> None:
    """A figure as the PNG `path`, atomically."""
    rundir.atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))


def _save_gif(frames: Sequence[Image.Image], path: Path, durations: Sequence[int]) -> None:
    """Frames as the looping GIF `path` (durations in ms), atomically."""
    rundir.atomic_write(path, lambda tmp: frames[0].save(tmp, format="GIF", save_all=True, append_images=list(frames[1:]),
                                                         duration=list(durations), loop=0))


def _wrapped(text: str, chars: int) -> str:
    """`text` wrapped at `chars` characters a line (at spaces, else inside a long word such as a
    file name: no character is lost), its own line breaks kept."""
    import textwrap

    return "\n".join(textwrap.fill(line, max(1, chars), break_long_words=True, break_on_hyphens=False) or line
                     for line in text.split("\n"))


def _fit(label, width_px: float) -> None:
    """Wrap a text artist (a title, a label) until it is at most `width_px` wide on its figure."""
    renderer = label.get_figure(root=True).canvas.get_renderer()
    text = label.get_text()
    chars = max(len(line) for line in text.split("\n"))
    while chars > 1 and label.get_window_extent(renderer).width > width_px:
        chars = min(chars - 1, int(chars * width_px / label.get_window_extent(renderer).width))
        label.set_text(_wrapped(text, chars))


def _fit_titles(fig, axes, pad: float = 1.08) -> None:
    """Lay the figure out with every axes' title no wider than its axes (wrapped where needed),
    so no title runs past the figure's edge or into its neighbour's; a figure whose wrapped titles
    need more height grows taller by what they need."""
    fig.tight_layout(pad=pad)
    for ax in axes:
        _fit(ax.title, ax.get_window_extent().width)
    fig.tight_layout(pad=pad)
    renderer = fig.canvas.get_renderer()
    for _ in range(3):
        fig.draw_without_rendering()  # the titles placed over their axes as drawn
        over = max(ax.title.get_window_extent(renderer).y1 for ax in axes) - fig.bbox.y1
        if over <= 0:
            break
        fig.set_figheight(fig.get_figheight() + (over + 2) / fig.dpi)
        fig.tight_layout(pad=pad)


def _legend_outside(ax, **options) -> None:
    """The axes' legend to the right of its plot, where it covers no data."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **options)


def _limits(points: np.ndarray, margin: float = 0.1) -> tuple[tuple[float, float], tuple[float, float]]:
    lo, hi = np.percentile(points, 0.5, axis=0), np.percentile(points, 99.5, axis=0)
    pad = (hi - lo) * margin
    return (lo[0] - pad[0], hi[0] + pad[0]), (lo[1] - pad[1], hi[1] + pad[1])


def _panel_size(lims, width: float) -> tuple[float, float]:
    """(width, height) in inches of a scatter panel `width` wide whose height follows the data's
    aspect (y range / x range, kept within 1/4..2): equal axes scales with no blank bands."""
    (x0, x1), (y0, y1) = lims
    aspect = min(2.0, max(0.25, (y1 - y0) / max(x1 - x0, 1e-12)))
    return width, width * aspect


def _style(ax, lims, title: str) -> None:
    """Equal scales on both axes, framed on `lims` (a panel sized by _panel_size, so the box
    fills its figure)."""
    ax.set_xlim(*lims[0])
    ax.set_ylim(*lims[1])
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)


TITLE_ROOM = 0.35  # inches above a scatter panel for its title


def scatter_strip(frames: Sequence[np.ndarray], titles: Sequence[str], path: Path, lims=None):
    """One row of 2-D scatters sharing axes limits (from the first and last frame unless given);
    returns the figure."""
    lims = lims or _limits(np.concatenate([frames[0], frames[-1]]))
    w, h = _panel_size(lims, 1.9)
    fig, axes = _subplots(1, len(frames), figsize=(w * len(frames), h + TITLE_ROOM), squeeze=False)
    for ax, pts, title in zip(axes[0], frames, titles):
        ax.scatter(pts[:, 0], pts[:, 1], **POINT_STYLE)
        _style(ax, lims, title)
    _fit_titles(fig, axes[0], pad=0.4)
    _save_figure(fig, path, 110)
    return fig


def scatter(points: np.ndarray, path: Path, title: str = "", reference: np.ndarray | None = None):
    """Samples (blue), optionally over reference data (grey, the legend under the plot); the
    figure framed on the points, of their aspect. Returns the figure."""
    lims = _limits(points if reference is None else np.concatenate([points, reference]))
    w, h = _panel_size(lims, 4.0)
    fig, ax = _subplots(figsize=(w, h + TITLE_ROOM + (0.3 if reference is not None else 0.0)))
    if reference is not None:
        ax.scatter(reference[:, 0], reference[:, 1], s=2, alpha=0.3, linewidths=0, color="0.6", label="data")
    ax.scatter(points[:, 0], points[:, 1], **{**POINT_STYLE, "label": "samples"})
    _style(ax, lims, title)
    if reference is not None:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, fontsize=7, markerscale=4, frameon=False)
    _fit_titles(fig, [ax], pad=0.4)
    _save_figure(fig, path, 120)
    return fig


def _figure_to_image(fig) -> Image.Image:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    buf.seek(0)
    return Image.open(buf).convert("P", palette=Image.Palette.ADAPTIVE)


def scatter_gif(frames: Sequence[np.ndarray], titles: Sequence[str], path: Path, ms_per_frame: int = 80) -> None:
    """An animated GIF of 2-D scatters, one frame each (the last frame lingers)."""
    lims = _limits(np.concatenate([frames[0], frames[-1]]))
    w, h = _panel_size(lims, 3.2)
    images = []
    for pts, title in zip(frames, titles):
        fig, ax = _subplots(figsize=(w, h + TITLE_ROOM))
        ax.scatter(pts[:, 0], pts[:, 1], **POINT_STYLE)
        _style(ax, lims, title)
        _fit_titles(fig, [ax], pad=0.4)
        images.append(_figure_to_image(fig))
    durations = [ms_per_frame] * (len(images) - 1) + [1500]
    _save_gif(images, path, durations)


def loss_curve(log: Sequence[dict], path: Path):
    """Training loss (and per-quarter-of-t losses) against step, log scale, the legend beside the
    plot; returns the figure."""
    steps = [r["step"] for r in log if r.get("loss") is not None]
    fig, ax = _subplots(figsize=(6.8, 3.5))
    for q, shade in zip(range(4), ("#c6dbef", "#9ecae1", "#6baed6", "#3182bd")):
        ys = [r.get(f"loss_q{q}") for r in log if r.get("loss") is not None]
        if all(y is not None for y in ys):
            ax.plot(steps, ys, color=shade, lw=1, label=f"t in quarter {q}")
    ax.plot(steps, [r["loss"] for r in log if r.get("loss") is not None], color="k", lw=1.6, label="loss")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    _legend_outside(ax, fontsize=7)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    _save_figure(fig, path, 110)
    return fig


def image_grid(images: np.ndarray, rows: int | None = None, pad: int = 1, scale: int = 1) -> Image.Image:
    """uint8 images [N, H, W, C] (C = 1..4) tiled into one picture ("L", "LA", "RGB" or
    "RGBA"; the padding opaque white), `scale`× enlarged."""
    n, h, w, c = images.shape
    rows = rows or int(np.ceil(np.sqrt(n)))
    cols = int(np.ceil(n / rows))
    canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, dtype=np.uint8)
    for k in range(n):
        r, col = divmod(k, cols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        canvas[y : y + h, x : x + w] = images[k]
    picture = Image.fromarray(canvas[..., 0] if c == 1 else canvas, IMAGE_MODES[c])
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
    return picture


def png_image(image: np.ndarray) -> Image.Image:
    """One image [H, W, C] at its own size and depth: uint8 grey, grey+alpha, RGB or RGBA, or
    uint16 grey (Pillow's "I;16", written as a 16-bit PNG)."""
    if image.dtype == np.uint16:
        return Image.fromarray(np.ascontiguousarray(image[..., 0], dtype="<u2"))  # Pillow: mode "I;16"
    return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def _opaque(picture: Image.Image) -> Image.Image:
    """An "LA" / "RGBA" picture composited over white ("L" / "RGB"); others unchanged."""
    from .data.decode import over_white

    return over_white(picture) if picture.mode in ("LA", "RGBA") else picture


def _displayable(image: np.ndarray) -> np.ndarray:
    """uint8 [H, W, C] -> what imshow draws: grey [H, W], RGB, or RGBA (grey + alpha
    spread to RGBA); imshow composites alpha over the white figure."""
    c = image.shape[-1]
    if c == 1:
        return image[..., 0]
    if c == 2:
        return np.concatenate([np.repeat(image[..., :1], 3, axis=-1), image[..., 1:]], axis=-1)
    return image


def grid_scale(height: int, width: int, target: int = 64) -> int:
    """An integer enlargement so each tile is about `target` px (tiny digits become visible)."""
    return max(1, target // max(height, width))


def image_table(rows: Sequence[Sequence[np.ndarray]], row_labels: Sequence[str], col_labels: Sequence[str], path: Path):
    """A labelled table of uint8 images [H, W, C]: one row per label, one column per label (each
    label whole: wrapped to its cell's width, a file name inside itself). Returns the figure."""
    h, w = rows[0][0].shape[:2]
    cell = 0.9 * max(1.0, min(1.6, 64 / max(h, w)))
    fig, axes = _subplots(len(rows), len(col_labels), figsize=(cell * len(col_labels) + 1.2, cell * len(rows) + 0.6), squeeze=False)
    for r, (row, label) in enumerate(zip(rows, row_labels)):
        for c, img in enumerate(row):
            ax = axes[r][c]
            ax.imshow(_displayable(img), cmap="gray" if img.shape[-1] == 1 else None, vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(col_labels[c], fontsize=7)
        axes[r][0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center", labelpad=6)
    _fit_titles(fig, axes[0], pad=0.8)
    _save_figure(fig, path, 110)
    return fig


def titled_grid(images: np.ndarray, titles: Sequence[str], path: Path, per_row: int = 8) -> None:
    """uint8 images [N, H, W, C] in rows of `per_row`, each enlarged like a grid's tiles with its own
    title under it (row after row), as a PNG (drawn by Pillow: fast for hundreds of tiles)."""
    from PIL import ImageDraw, ImageFont

    n, h, w, _ = images.shape
    scale = grid_scale(h, w)
    tile_w, tile_h, text_h, pad = max(w * scale, 48), h * scale, 12, 4
    rows = int(np.ceil(n / per_row))
    canvas = Image.new("RGB", (per_row * (tile_w + pad) + pad, rows * (tile_h + text_h + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for k in range(n):
        r, c = divmod(k, per_row)
        x, y = pad + c * (tile_w + pad), pad + r * (tile_h + text_h + pad)
        tile = _opaque(image_grid(images[k : k + 1], pad=0, scale=scale)).convert("RGB")
        canvas.paste(tile, (x + (tile_w - tile.width) // 2, y))
        draw.text((x, y + tile_h + 1), titles[k], fill="black", font=font)
    rundir.atomic_write(path, lambda tmp: canvas.save(tmp, format="PNG"))


HEADER = 16  # px of a GIF frame's caption line


def side_by_side_gif(lefts: Sequence[np.ndarray], rights: Sequence[np.ndarray], path: Path, rows: int | None = None,
                     ms_per_frame: int = 60, captions: Sequence[tuple[str, str]] | None = None) -> None:
    """An animated GIF whose frames put two image grids side by side (e.g. x_t and x̂_0);
    each element of `lefts`/`rights` is a uint8 batch [N, H, W, C]; `captions`: each frame's
    (left, right) caption, drawn in a line above its grids (e.g. the timestep t). The last
    frame lingers. GIF has no alpha channel: images with one are composited over white."""
    from PIL import ImageDraw, ImageFont

    frames = []
    mode = "L" if lefts[0].shape[-1] in (1, 2) else "RGB"
    top = HEADER if captions is not None else 0
    font = ImageFont.load_default(11)
    for k, (left, right) in enumerate(zip(lefts, rights)):
        scale = grid_scale(left.shape[1], left.shape[2])
        a, b = (_opaque(image_grid(x, rows, scale=scale)) for x in (left, right))
        frame = Image.new(mode, (a.width + b.width + 8, max(a.height, b.height) + top), "white")
        frame.paste(a, (0, top))
        frame.paste(b, (a.width + 8, top))
        if captions is not None:
            draw = ImageDraw.Draw(frame)
            for x, text in ((2, captions[k][0]), (a.width + 10, captions[k][1])):
                draw.text((x, 1), text, fill="black", font=font)
        frames.append(frame if mode == "L" else frame.convert("P", palette=Image.Palette.ADAPTIVE))
    durations = [ms_per_frame] * (len(frames) - 1) + [2000]
    _save_gif(frames, path, durations)


def frames_gif(frames: Sequence[np.ndarray], path: Path, ms_per_frame: int = 150, rows: int | None = None) -> None:
    """An animated GIF of image grids, one uint8 batch [N, H, W, C] per frame, enlarged like
    image grids; played forth and back (a loop). GIF has no alpha: such images are shown over white."""
    scale = grid_scale(frames[0].shape[1], frames[0].shape[2])
    pictures = [_opaque(image_grid(f, rows, scale=scale)) for f in frames]
    if pictures[0].mode != "L":
        pictures = [p.convert("P", palette=Image.Palette.ADAPTIVE) for p in pictures]
    loop = pictures + pictures[-2:0:-1]
    durations = [ms_per_frame] * len(loop)
    durations[0] = durations[len(pictures) - 1] = 4 * ms_per_frame  # the endpoints linger
    _save_gif(loop, path, durations)


def quality_vs_steps(results: Sequence[dict], metric: str, path: Path, title: str = ""):
    """One line per sampler: `metric` against network evaluations (log x), the legend beside the
    plot, the title wrapped to the plot's width; returns the figure."""
    fig, ax = _subplots(figsize=(6.5, 3.8))
    for name in dict.fromkeys(r["sampler"] for r in results):
        rows = sorted((r for r in results if r["sampler"] == name), key=lambda r: r["nfe"])
        ax.plot([r["nfe"] for r in rows], [r[metric] for r in rows], marker="o", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("network evaluations per sample")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    _legend_outside(ax, fontsize=8)
    _fit_titles(fig, [ax])
    _save_figure(fig, path, 110)
    return fig


def quality_curve(steps: Sequence[int], values: Sequence[float], metric: str, path: Path, title: str = ""):
    """A quality measure (lower is better) against training step, the lowest one marked; the
    title wrapped to the plot's width. Returns the figure."""
    fig, ax = _subplots(figsize=(5.5, 3.6))
    ax.plot(steps, values, marker="o", color="k", lw=1.4)
    finite = [(v, s) for s, v in zip(steps, values) if np.isfinite(v)]
    if finite:
        best, at = min(finite)
        ax.plot([at], [best], marker="*", color="tab:red", ms=14, ls="none", label=f"best: step {at:,} ({best:.4g})")
        ax.legend(fontsize=8, loc="best")
    ax.set_xlabel("training step")
    ax.set_ylabel(metric.replace("_", " ") + " (lower is better)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    _fit_titles(fig, [ax])
    _save_figure(fig, path, 110)
    return fig


def schedule_panels(curves: dict[str, dict[str, np.ndarray]], path: Path):
    """Three panels against t/T: β_t (log scale), ᾱ_t and log-SNR λ_t, one line per schedule
    (`curves`: label → {"beta", "alpha_bar", "log_snr"}, each [T])."""
    fig, axes = _subplots(1, 3, figsize=(11, 3.4))
    panels = (("beta", "β_t", "log"), ("alpha_bar", "ᾱ_t", "linear"), ("log_snr", "log-SNR λ_t = log(ᾱ_t / (1 − ᾱ_t))", "linear"))
    for ax, (key, title, scale) in zip(axes, panels):
        for label, curve in curves.items():
            values = curve[key]
            ax.plot((np.arange(len(values)) + 1) / len(values), values, lw=1.5, label=label)
        ax.set_yscale(scale)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("t / T")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7, loc="best")
    _fit_titles(fig, axes)
    _save_figure(fig, path, 110)
    return fig
