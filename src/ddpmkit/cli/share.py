"""`ddpmkit export` and `ddpmkit import`: a run to and from a diffusers pipeline folder."""

from __future__ import annotations

from pathlib import Path

from ..outputs import claim, replaced_note
from .options import DEVICE_HELP, add_overwrite, command


def add_export(sub) -> None:
    """export a trained run as a diffusers pipeline folder with its model card

    Write OUT as a folder diffusers.DDPMPipeline.from_pretrained(OUT) loads (model_index.json,
    scheduler/, unet/ with the weights in safetensors), its model card OUT/README.md (the run's
    data, recipe and every measurement of metrics.json) and OUT/samples.png. Upload it with
    `huggingface-cli upload USER/NAME OUT .`. U-Nets of ResNet blocks with full attention export;
    what cannot map is refused in one line.
    """
    p = command(sub, "export", add_export, run=True)
    p.add_argument("--format", default="diffusers", choices=["diffusers"], help="the format to write")
    p.add_argument("--out", type=Path, required=True, help="folder to write (new, empty, or an earlier export)")
    p.add_argument("--weights", default="ema", metavar="ema|model|PATH",
                   help="which weights: ema (the EMA), model (the live weights) or a .safetensors file")
    p.add_argument("--license", default="other", help="the license in the card's front matter, e.g. mit, apache-2.0")
    add_overwrite(p)
    p.add_argument("--device", help=DEVICE_HELP + "; draws the card's sample grid")


def add_import(sub) -> None:
    """make a run directory from a saved diffusers pipeline whose UNet fits ddpmkit's U-Net

    Read a pipeline folder saved by diffusers (save_pretrained: model_index.json, scheduler/,
    unet/) and write a run directory that ddpmkit sample and evaluate take. The UNet2DModel must
    use the scale-shift ResNet block (resnet_time_scale_shift="scale_shift") and the schedule
    must be one of ddpmkit's; what does not fit is named in one line.
    """
    p = command(sub, "import", add_import)
    p.add_argument("--from", dest="format", default="diffusers", choices=["diffusers"], help="the format to read")
    p.add_argument("path", type=Path, help="the saved pipeline folder")
    p.add_argument("--out", type=Path, required=True, help="the run directory to write (new or empty)")
    p.add_argument("--data", help="the data set the model was trained on (what evaluate measures against)")


def run_export(args) -> int:
    from ..api import export

    out = claim(args.out, "export", overwrite=args.overwrite)
    files = export(args.run, out, format=args.format, weights=args.weights, license=args.license, device=args.device)
    print(f"wrote {len(files)} files to {args.out}{replaced_note(out)}: " + ", ".join(str(f.relative_to(args.out)) for f in files)
          + f"; load it with diffusers.DDPMPipeline.from_pretrained({str(args.out)!r})")
    return 0


def run_import(args) -> int:
    from ..api import import_run

    config = import_run(args.path, args.out, format=args.format, data=args.data)
    h, w = config.data.image_size
    print(f"wrote the run {args.out} ({h}x{w} px, {config.data.channels} channel(s), T = {config.diffusion.num_steps}, "
          f"{config.diffusion.schedule} schedule); sample it with ddpmkit sample --run {args.out}")
    return 0
