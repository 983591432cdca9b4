"""What the command-line parsers share: list options, the help formatter, the data option's help,
the run option (`add_run`, with its torchrun spelling --run-dir), the options of the training loop
that `train` and `distill` both take (`add_precision`, `add_grad_accum`, `add_logger`), and the one
declaration of the sampling request's options (`add_sampling`, `request_from_args`)."""

from __future__ import annotations

import argparse
import inspect
from dataclasses import dataclass
from pathlib import Path

from ..config import LOGGERS, PRECISIONS
from ..data.formats import described
from ..data.toy import TOY_DATASETS
from ..denoiser import CLIPS
from ..editing.interpolation import INTERPOLATION
from ..editing.repaint import REPAINT
from ..errors import UserError
from ..sampling import DEFAULT_SAMPLER, DEFAULT_STEPS, Guidance, SamplingRequest
from ..schedules import SPACINGS

DEVICE_HELP = "cpu, cuda, cuda:N or mps (default: the best available)"
SAMPLER_HELP = "ddpm (ancestral), ddim, dpm++ (DPM-Solver++ 2M, the ODE), dpm++sde (SDE-DPM-Solver++ 2M) or heun"


def data_help(images_only: bool = False) -> str:
    """What --data takes: the 2-D toy sets (unless `images_only`) and every format of data.formats."""
    return ("" if images_only else f"{', '.join(TOY_DATASETS)} (2-D toy sets), ") + described()


def input_help() -> str:
    """What --input (and score's --images) take: the formats of data.formats that a user's images may come in."""
    return f"{described(user_images=True)}; resized and centre-cropped to the run's size as its training data were"


def ints(text: str, option: str) -> list[int]:
    """A comma-separated list of integers."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{option} takes comma-separated integers, got {text!r}") from None


def sizes(text: str, option: str) -> tuple[int, ...]:
    """A comma-separated list of sizes, or none."""
    return () if text.strip().lower() == "none" else tuple(ints(text, "--" + option.replace("_", "-")))


class DefaultsUnlessNone(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default once: not when it is None (the help then says what happens)
    nor when the help already names it."""

    def _get_help_string(self, action):
        said = "default" in (action.help or "").lower()
        return action.help if action.default is None or said else super()._get_help_string(action)


def command(sub, name: str, declare, *, formatter_class=DefaultsUnlessNone,
            run: bool = False) -> argparse.ArgumentParser:
    """A sub-command's parser, described by the docstring of the function `declare` that adds
    its options (first paragraph: the one-line help; the rest: the description); with `run`,
    its required --run RUN_DIR option."""
    help, _, description = inspect.cleandoc(declare.__doc__).partition("\n\n")
    p = sub.add_parser(name, help=help, description=" ".join(description.split()), formatter_class=formatter_class)
    if run:
        add_run(p, "a run directory written by ddpmkit train", required=True)
    return p


def add_run(p: argparse.ArgumentParser, help: str, *, torchrun: bool = False, **kwargs) -> None:
    """--run RUN, also spelled --run-dir: torchrun reads abbreviations of its own options anywhere
    on its command line and takes --run for its --run-path, so under torchrun the spelling is
    --run-dir (said in the help of the commands that run under torchrun)."""
    note = "; spelled --run-dir under torchrun, which reads --run as its own --run-path" if torchrun else ""
    p.add_argument("--run", "--run-dir", dest="run", type=Path, metavar="RUN", help=help + note, **kwargs)


def add_precision(g, default: str) -> None:
    """--precision of the training loop's forward passes; `default` says what it is when left out."""
    g.add_argument("--precision", choices=PRECISIONS, help="fp32; bf16: autocast to bfloat16 (CUDA, CPUs with "
                   "AVX-512 bf16); fp16: autocast to float16 with loss scaling (CUDA); auto: bf16 where the GPU or CPU "
                   f"computes bf16 natively, else fp32. Default: {default}")


def add_grad_accum(g) -> None:
    """--grad-accum of the training loop."""
    g.add_argument("--grad-accum", type=int, help="micro-batches per optimiser step")


def logger_names(text: str) -> list[str]:
    """--logger's value: comma-separated logger names; none: no logger."""
    return [name for name in (n.strip() for n in text.split(",")) if name and name != "none"]


def add_logger(g) -> None:
    """--logger of the training loop: where its log records also go."""
    g.add_argument("--logger", type=logger_names, action="extend", metavar="NAME[,NAME]",
                   help=f"also log to {' or '.join(LOGGERS)} (several: repeat or separate by commas; none: only "
                   "log.jsonl, the default). Extras: pip install \"ddpmkit[tensorboard]\" / \"ddpmkit[wandb]\"; W&B runs "
                   "offline unless WANDB_MODE=online")


def add_overwrite(p: argparse.ArgumentParser) -> None:
    """--overwrite: the one declaration of the option that lets a command replace a folder it did not write."""
    p.add_argument("--overwrite", action="store_true", help="replace the output folder as a whole even if it holds files "
                   "ddpmkit did not write (without it such a folder is refused; a run directory is never replaced)")


def add_progress(p) -> None:
    """--no-progress, the one declaration every command with long work shares (its bars go to stderr)."""
    p.add_argument("--no-progress", action="store_true", help="no progress bar (on stderr)")


def add_weights(p: argparse.ArgumentParser) -> None:
    """--weights, and --ema/--no-ema, the older names of --weights ema and --weights model."""
    p.add_argument("--weights", metavar="best|last|ema|model|PATH",
                   help="which weights: best (the step --eval-every measured best), last or ema (the EMA weights of the "
                   "newest checkpoint), model (its live weights), or a .safetensors file; without it, ema")
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=None,
                   help="--ema is --weights ema, --no-ema is --weights model")


def weights_from_args(args) -> str:
    """The --weights name, from --weights or its older spelling --ema/--no-ema."""
    if args.ema is not None:
        if args.weights is not None:
            raise UserError("--ema/--no-ema are older names of --weights ema/model; give only --weights")
        return "ema" if args.ema else "model"
    return args.weights or "ema"


@dataclass(frozen=True)
class Method:
    """What a command's way of sampling takes of the sampling request's options, and its default
    where it needs its own (the help says why)."""

    default: str = (f"{DEFAULT_SAMPLER} on {DEFAULT_STEPS} steps, which scores as well as 1,000 ddpm steps at 50x fewer "
                    "network calls; a distilled run: ddim on its own grid")
    samplers: str = SAMPLER_HELP
    steps: str = "sampling steps out of the trained T (if left out: the default sampler's, or all T for a --sampler named alone)"
    classes: str = "K|all"  # what --class takes: "K|all", "K", or "" (no --class: samples balanced over the classes)
    eta: bool = True  # --eta (DDIM's)
    classifier: bool = True  # --classifier-scale
    grid: bool = True  # --sampler and --steps (compare-samplers has lists of its own)


SAMPLE = Method()
EDIT = Method(classes="K", steps="steps of a full draw out of the trained T; the edit takes about s·steps of them "
              f"(default: {DEFAULT_STEPS}, as for sample)")
INPAINT = Method(default=f"{REPAINT[0]} on every step: RePaint walks back and forth with a one-step reverse step, which "
                 "multistep solvers cannot do", samplers="ddpm (RePaint's ancestral step) or ddim (its deterministic step, "
                 "--eta for noise)", classes="K")
INTERPOLATE = Method(default=f"{INTERPOLATION[0]} on every step: deterministic DDIM inverts exactly only as the steps grow",
                     samplers="ddim only: deterministic DDIM both ways (the inverse of its inversion)", classes="K", eta=False,
                     classifier=False)
EVALUATE = Method(classes="")
COMPARE = Method(eta=False, grid=False)
D = SamplingRequest()  # the defaults the help states (the request's own)


def add_sampling(p: argparse.ArgumentParser, method: Method = SAMPLE) -> None:
    """The options of a sampling request (sampling.SamplingRequest), as `method` takes them: --seed,
    --weights (and --ema/--no-ema), --sampler, --steps, --spacing, --eta, --clip, --dynamic-threshold,
    --class, --guidance, --classifier-scale, --autoguide, --autoguide-scale, --guidance-interval. Every default is the request's, applied when it is made
    (an option not given stays None here)."""
    g = p.add_argument_group("sampling (how samples are drawn)")
    g.add_argument("--seed", type=int, help=f"seed of the sampling noise (default {D.seed})")
    add_weights(g)
    if method.grid:
        g.add_argument("--sampler", help=f"{method.samplers} (default: {method.default})")
        g.add_argument("--steps", type=int, help=method.steps)
    g.add_argument("--spacing", choices=SPACINGS, help="which --steps timesteps: linspace (evenly from T-1 to 0, the "
                   "default), leading (0, k, 2k, ...: DDIM's), trailing (T-1, T-1-k, ...: Lin et al. 2024)")
    if method.eta:
        g.add_argument("--eta", type=float, help="ddim only: 0 deterministic, 1 ancestral-like (default 0)")
    g.add_argument("--clip", choices=CLIPS, help="keep x̂_0 in [-1, 1]: static clipping, dynamic thresholding (Imagen) or "
                   "none (default: static for images, none for 2-D data)")
    g.add_argument("--dynamic-threshold", type=float, metavar="P",
                   help=f"percentile of |x̂_0| for --clip dynamic (default {D.percentile})")
    if method.classes == "K|all":
        g.add_argument("--class", dest="class_", metavar="K|all",
                       help="draw class K, or 'all' (-n per class, a grid row each): conditional runs, "
                       "or any run with a classifier (ddpmkit train-classifier) and --classifier-scale")
    elif method.classes == "K":
        g.add_argument("--class", dest="class_", metavar="K", help="the class K every image is edited as: conditional "
                       "runs, or any run with a classifier (ddpmkit train-classifier) and --classifier-scale")
    g.add_argument("--guidance", type=float, help="classifier-free guidance strength w: ε = (1+w)·ε(x,c) − w·ε(x,∅); 0 (the "
                   "default) is the conditional model, -1 the unconditional one, below -1 anti-guidance (away from the class)"
                   + ("; measured on samples balanced over the classes" if not method.classes else ""))
    if method.classifier:
        g.add_argument("--classifier-scale", type=float, metavar="S", help="classifier guidance (Dhariwal & Nichol 2021) "
                       "towards the class by RUN/classifier/: ε̂ − S·√(1−ᾱ_t)·∇ log p(class | x_t); after --guidance; 0 (the "
                       "default) is plain sampling; each network evaluation adds a classifier forward and backward pass")
    g.add_argument("--autoguide", metavar="GUIDE|none", help="autoguidance (Karras et al. 2024): guide the model by a weaker "
                   "version of itself, D = D_guide + W·(D_main − D_guide). GUIDE: auto (RUN/guide.safetensors, the EMA weights "
                   "the run kept at --guide-at, its narrow guide's if trained with --guide-width), step-N (the EMA of its "
                   "checkpoint of step N), posthoc:S[@N] (a post-hoc EMA of width S rebuilt from its snapshots, at step N), a run directory (same data, T, schedule, prediction, shape; "
                   "e.g. a narrower one) or a .safetensors file; none: off, as when left out (measured: docs/guidance.md); each network evaluation adds a pass of the guide")
    g.add_argument("--autoguide-scale", type=float, metavar="W", help=f"autoguidance's W: 1 is the main model, 0 the guide "
                   f"(default {D.guidance.autoguide_scale:g})")
    g.add_argument("--guidance-interval", type=_interval, metavar="LO,HI", help="apply --autoguide and --guidance only at "
                   "noise levels LO ≤ σ ≤ HI, σ = √((1−ᾱ_t)/ᾱ_t) (EDM's σ; Kynkäänniemi et al. 2024); elsewhere the plain "
                   "model (default: every step)")


def _interval(text: str) -> tuple[float, float]:
    """--guidance-interval's LO,HI (an argparse type; SamplingRequest checks the values)."""
    parts = text.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        return float(parts[0]), float(parts[1])
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes LO,HI, two noise levels σ = √((1−ᾱ)/ᾱ) such as 0.3,5; got {text!r}") from None


# the request's field of each option add_sampling declares (argparse's dest -> SamplingRequest field)
REQUEST_FIELDS = {"seed": "seed", "sampler": "sampler", "steps": "steps", "spacing": "spacing", "eta": "eta",
                  "clip": "clip", "dynamic_threshold": "percentile", "class_": "classes"}
GUIDANCE_FIELDS = {"guidance": "cfg", "classifier_scale": "classifier", "autoguide": "autoguide",
                   "autoguide_scale": "autoguide_scale", "guidance_interval": "interval"}


def _declared(method: Method) -> list[str]:
    """The dests of the request's options that add_sampling declares for `method`."""
    left_out = {*(() if method.grid else ("sampler", "steps")), *(() if method.eta else ("eta",)),
                *(() if method.classes else ("class_",)), *(() if method.classifier else ("classifier_scale",))}
    return [d for d in (*REQUEST_FIELDS, *GUIDANCE_FIELDS) if d not in left_out]


def sampling_given(args, method: Method = SAMPLE) -> list[str]:
    """The sampling options given on the command line (their option names)."""
    dests = [*_declared(method), "weights", "ema"]
    return ["--" + d.rstrip("_").replace("_", "-") for d in dests if getattr(args, d, None) is not None]


def request_from_args(args, method: Method = SAMPLE) -> SamplingRequest:
    """The sampling request the command line asks for: the options `method` declares that were
    given, the request's own defaults for the rest."""
    given = {d: getattr(args, d) for d in _declared(method) if getattr(args, d, None) is not None}
    request = {REQUEST_FIELDS[d]: v for d, v in given.items() if d in REQUEST_FIELDS}
    guidance = {GUIDANCE_FIELDS[d]: v for d, v in given.items() if d in GUIDANCE_FIELDS}
    return SamplingRequest(**request, guidance=Guidance(**guidance), weights=weights_from_args(args),
                           progress=not getattr(args, "no_progress", False))
