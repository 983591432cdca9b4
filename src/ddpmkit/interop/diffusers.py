"""ddpmkit's ResNet-block U-Net and its schedule as a diffusers pipeline folder, and back.

The folder is what `diffusers.DDPMPipeline.from_pretrained(OUT)` loads:
    model_index.json                          the pipeline's parts
    scheduler/scheduler_config.json           DDPMScheduler: T, β (named or trained_betas), prediction, variance, clipping
    unet/config.json                          UNet2DModel's constructor arguments
    unet/diffusion_pytorch_model.safetensors  the weights, under diffusers' names

Why the two networks are the same function (nets/unet.py ↔ diffusers' UNet2DModel):
- time: ddpmkit's [cos, sin] sinusoidal features with frequencies exp(−log(10⁴)·i/half) are
  Timesteps(flip_sin_to_cos=True, downscale_freq_shift=0) of width base_width, followed by
  the same two-layer MLP (TimestepEmbedding) to 4·base_width; so channel_mults[0] must be 1
  (diffusers' time features and stem have block_out_channels[0] channels);
- classes: LabelEmbedding's num_classes + 1 rows (the last the null label) are
  nn.Embedding(num_class_embeds = num_classes + 1), added to the time embedding;
- ResBlock is ResnetBlock2D(time_embedding_norm="scale_shift"): GN·(1 + s) + b with (s, b) the
  two halves of one projection of SiLU(emb) (ddpmkit applies that SiLU once, diffusers in each
  block: the same values); the 1×1 skip, an nn.Linear here, is conv_shortcut's [o, i, 1, 1];
- GroupNorm: ddpmkit clamps `groups` to a divisor of each width, diffusers uses one
  norm_num_groups; the export needs every norm to end up with the same group count;
- attention: one GroupNorm, q, k, v of heads with d = width/heads contiguous channels each,
  softmax(q kᵀ/√d) v, output map, residual: diffusers' Attention with attention_head_dim = d
  (one d for every attended level and the middle), q, k, v biases zero (ddpmkit's qkv has none);
- Downsample is Downsample2D(conv, padding 1); Upsample is nearest ×2 then the stored 3×3
  conv (ddpmkit computes it as four 2×2 convs of the small map: same function, same weight).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from .. import checkpoint
from ..build import build_net, weights_file
from ..config import DataConfig, DiffusionConfig, RunConfig
from ..errors import UserError
from ..nets.blocks import norm_groups
from ..nets.unet import UNet, UNetConfig
from ..rundir import atomic_write, atomic_write_text, check_output_folder, write_config
from ..schedules import RANGED, SCHEDULES, beta_range, make_betas

MODEL_INDEX = "model_index.json"
SCHEDULER_CONFIG = "scheduler/scheduler_config.json"
UNET_CONFIG = "unet/config.json"
UNET_WEIGHTS = "unet/diffusion_pytorch_model.safetensors"
FILES = (MODEL_INDEX, SCHEDULER_CONFIG, UNET_CONFIG, UNET_WEIGHTS)

PREDICTION_TYPES = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}  # ddpmkit -> diffusers
VARIANCE_TYPES = {"fixed_small": "fixed_small", "fixed_large": "fixed_large", "learned_range": "learned_range"}
VARIANCES_BACK = {**{v: k for k, v in VARIANCE_TYPES.items()}, "fixed_small_log": "fixed_small",
                  "fixed_large_log": "fixed_large"}
BETA_RTOL = 1e-6  # a named diffusers schedule is used when its float32 β match ddpmkit's to this relative error


def require_diffusers():
    """The diffusers package, or one line naming the extra that installs it."""
    try:
        import diffusers
    except ImportError:
        raise UserError('exporting or importing diffusers models needs diffusers: pip install "ddpmkit[diffusers]"') from None
    return diffusers


# ---- the network's configuration ---------------------------------------------------------------
def unet_config(config: RunConfig) -> dict:
    """UNet2DModel's constructor arguments for the run's U-Net, or one line naming what cannot map."""
    net = config.net
    if not isinstance(net, UNetConfig):
        raise UserError("only U-Net runs export to diffusers (UNet2DModel is an image network); this run's network is an MLP")
    if net.block != "resnet":
        raise UserError("unet.block 'convnext' has no diffusers UNet2DModel block; only 'resnet' U-Nets export")
    if net.linear_attention_resolutions:
        raise UserError("unet.linear_attention_resolutions: diffusers' UNet2DModel has no linear attention; "
                        "only full attention (attention_resolutions) exports")
    if net.channel_mults[0] != 1:
        raise UserError(f"unet.channel_mults starts with {net.channel_mults[0]}: diffusers' stem and time features have "
                        "the first level's width, ddpmkit's have base_width; only channel_mults starting with 1 export")
    widths = [net.base_width * m for m in net.channel_mults]
    sizes = net.level_sizes()
    attended = [w for w, s in zip(widths, sizes) if s in net.attention_resolutions]
    if net.has_attention:
        attended.append(widths[-1])  # the middle's attention
    head_dims = {w // net.attention_heads for w in attended}
    if len(head_dims) > 1:
        raise UserError(f"unet.attention_heads {net.attention_heads} gives channels per head {sorted(head_dims)} at the "
                        "attended levels; diffusers has one attention_head_dim: attend only levels of one width")
    groups = {norm_groups(c, net.groups) for c in _norm_widths(net)}
    if len(groups) > 1:
        raise UserError(f"unet.groups {net.groups} is clamped to different GroupNorm group counts {sorted(groups)} across "
                        "the widths; diffusers has one norm_num_groups: train with unet.groups dividing every width")
    group = groups.pop()
    h, w = config.data.image_size or (net.image_size, net.image_size)
    attn = [s in net.attention_resolutions for s in sizes]
    return {
        "sample_size": h if h == w else [h, w],
        "in_channels": net.in_channels,
        "out_channels": net.out_channels,
        "center_input_sample": False,
        "time_embedding_type": "positional",
        "freq_shift": 0,
        "flip_sin_to_cos": True,
        "down_block_types": ["AttnDownBlock2D" if a else "DownBlock2D" for a in attn],
        "mid_block_type": "UNetMidBlock2D",
        "up_block_types": ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)],
        "block_out_channels": widths,
        "layers_per_block": net.blocks_per_level,
        "mid_block_scale_factor": 1,
        "downsample_padding": 1,
        "downsample_type": "conv",
        "upsample_type": "conv",
        "dropout": net.dropout,
        "act_fn": "silu",
        "attention_head_dim": head_dims.pop() if head_dims else None,
        "norm_num_groups": group,
        "attn_norm_num_groups": group,
        "norm_eps": 1e-5,
        "resnet_time_scale_shift": "scale_shift",
        "add_attention": net.has_attention,
        "class_embed_type": None,
        "num_class_embeds": net.num_classes + 1 if net.num_classes else None,
    }


def _norm_widths(net: UNetConfig) -> set[int]:
    """The channel counts of every GroupNorm of the U-Net."""
    return {m.num_channels for m in UNet(net).modules() if isinstance(m, torch.nn.GroupNorm)}


def fit_unet(cfg: dict) -> UNetConfig:
    """ddpmkit's UNetConfig of a UNet2DModel config, or one line saying which part does not fit."""
    def need(key: str, wanted, why: str) -> None:
        if cfg.get(key, wanted) != wanted:
            raise UserError(f"the diffusers UNet2DModel has {key}={cfg.get(key)!r}, ddpmkit's U-Net needs {wanted!r} ({why})")

    need("resnet_time_scale_shift", "scale_shift", "its ResBlock is the scale-shift norm of Nichol & Dhariwal 2021")
    need("time_embedding_type", "positional", "sinusoidal time features")
    need("flip_sin_to_cos", True, "cos before sin")
    need("freq_shift", 0, "frequencies exp(-log(10^4)·i/half)")
    need("center_input_sample", False, "inputs already in [-1, 1]")
    need("act_fn", "silu", "SiLU activations")
    need("norm_eps", 1e-5, "GroupNorm eps")
    need("downsample_type", "conv", "strided 3x3 conv")
    need("upsample_type", "conv", "nearest x2 then a 3x3 conv")
    need("downsample_padding", 1, "strided conv with padding 1")
    need("mid_block_type", "UNetMidBlock2D", "block, attention, block in the middle")
    need("mid_block_scale_factor", 1, "no output scaling")
    need("class_embed_type", None, "classes as an embedding table")
    down, up = list(cfg["down_block_types"]), list(cfg["up_block_types"])
    known = {"DownBlock2D": False, "AttnDownBlock2D": True}
    if any(b not in known for b in down) or any(b not in {"UpBlock2D", "AttnUpBlock2D"} for b in up):
        raise UserError(f"the diffusers UNet2DModel has blocks {down} / {up}; ddpmkit's U-Net maps only "
                        "DownBlock2D, AttnDownBlock2D, UpBlock2D and AttnUpBlock2D")
    attn = [known[b] for b in down]
    if [b == "AttnUpBlock2D" for b in reversed(up)] != attn:
        raise UserError("the diffusers UNet2DModel attends different levels on the way down and up; ddpmkit's U-Net "
                        "attends the same levels in both")
    widths = list(cfg["block_out_channels"])
    base = widths[0]
    if any(w % base for w in widths):
        raise UserError(f"the diffusers UNet2DModel's block_out_channels {widths} are not multiples of the first; "
                        "ddpmkit's widths are base_width·channel_mults")
    size = cfg.get("sample_size")
    if size is None:
        raise UserError("the diffusers UNet2DModel has no sample_size; ddpmkit needs the image size (set sample_size in unet/config.json)")
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    side = min(h, w)
    sizes = [side // 2**i for i in range(len(widths))]
    has_attention = any(attn)
    if bool(cfg.get("add_attention", True)) != has_attention:
        raise UserError("the diffusers UNet2DModel has middle attention without level attention (or the reverse); "
                        "ddpmkit's U-Net has middle attention exactly when a level attends")
    head_dim = cfg.get("attention_head_dim")
    attended = [wd for wd, a in zip(widths, attn) if a] + ([widths[-1]] if has_attention else [])
    heads = {wd // (head_dim or wd) for wd in attended}
    if len(heads) > 1:
        raise UserError(f"the diffusers UNet2DModel has {sorted(heads)} attention heads at different levels "
                        f"(attention_head_dim {head_dim}); ddpmkit's U-Net has one head count")
    if cfg.get("attn_norm_num_groups") not in (None, cfg["norm_num_groups"]):
        raise UserError("the diffusers UNet2DModel's attention norms use other groups than its blocks; ddpmkit uses one")
    classes = cfg.get("num_class_embeds") or 0
    return UNetConfig(
        in_channels=cfg["in_channels"], out_channels=cfg["out_channels"], base_width=base,
        channel_mults=tuple(wd // base for wd in widths), blocks_per_level=cfg["layers_per_block"], image_size=side,
        attention_resolutions=tuple(s for s, a in zip(sizes, attn) if a), attention_heads=heads.pop() if heads else 4,
        dropout=float(cfg.get("dropout", 0.0)), num_classes=max(classes - 1, 0), groups=cfg["norm_num_groups"],
    )


# ---- weights -----------------------------------------------------------------------------------
_PREFIXES = [  # ddpmkit module path -> diffusers module path
    (r"time_embed\.mlp\.0\.", "time_embedding.linear_1."),
    (r"time_embed\.mlp\.2\.", "time_embedding.linear_2."),
    (r"label_embed\.", "class_embedding."),
    (r"stem\.", "conv_in."),
    (r"out_norm\.", "conv_norm_out."),
    (r"out_conv\.", "conv_out."),
    (r"encoder\.(\d+)\.(\d+)\.block\.", r"down_blocks.\1.resnets.\2."),
    (r"encoder\.(\d+)\.(\d+)\.attention\.", r"down_blocks.\1.attentions.\2."),
    (r"downsamples\.(\d+)\.conv\.", r"down_blocks.\1.downsamplers.0.conv."),
    (r"middle\.0\.block\.", "mid_block.resnets.0."),
    (r"middle\.0\.attention\.", "mid_block.attentions.0."),
    (r"middle\.1\.block\.", "mid_block.resnets.1."),
    (r"decoder\.(\d+)\.(\d+)\.block\.", r"up_blocks.\1.resnets.\2."),
    (r"decoder\.(\d+)\.(\d+)\.attention\.", r"up_blocks.\1.attentions.\2."),
    (r"upsamples\.(\d+)\.conv\.", r"up_blocks.\1.upsamplers.0.conv."),
]
_LEAVES = {"emb_proj": "time_emb_proj", "skip": "conv_shortcut", "norm": "group_norm", "proj": "to_out.0"}


def diffusers_name(key: str) -> str:
    """The diffusers name of a ddpmkit U-Net weight (qkv is split apart by to_diffusers)."""
    for pattern, replacement in _PREFIXES:
        m = re.match(pattern, key)
        if m:
            prefix, rest = m.expand(replacement), key[m.end():]
            module, _, leaf = rest.rpartition(".")
            return prefix + (_LEAVES.get(module, module) + "." if module else "") + leaf
    raise KeyError(f"no diffusers name for the U-Net weight {key!r}")


def to_diffusers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ddpmkit U-Net state dict under diffusers' names and shapes."""
    out = {}
    for key, t in state.items():
        name = diffusers_name(key)
        if key.endswith("attention.qkv.weight"):
            prefix = name[: -len("qkv.weight")]
            for part, w in zip("qkv", t.chunk(3)):
                out[f"{prefix}to_{part}.weight"] = w.contiguous()
                out[f"{prefix}to_{part}.bias"] = torch.zeros(w.shape[0], dtype=t.dtype)
        elif key.endswith("skip.weight"):
            out[name] = t.reshape(*t.shape, 1, 1)  # a 1×1 conv
        else:
            out[name] = t.contiguous()
    return out


def from_diffusers(state: dict[str, torch.Tensor], net: UNetConfig) -> dict[str, torch.Tensor]:
    """A UNet2DModel state dict as the weights of ddpmkit's UNet(net); every diffusers weight
    is used, or one line says which is left over. The k bias is dropped (softmax ignores a
    constant per query), the v bias folded into the output map's bias (attention rows sum to
    1); a non-zero q bias has no place in ddpmkit's attention and is refused."""
    state = dict(state)
    out = {}
    for key, like in UNet(net).state_dict().items():
        name = diffusers_name(key)
        if key.endswith("attention.qkv.weight"):
            prefix = name[: -len("qkv.weight")]
            out[key] = torch.cat([state.pop(f"{prefix}to_{p}.weight") for p in "qkv"])
            q_bias, _, v_bias = (state.pop(f"{prefix}to_{p}.bias", None) for p in "qkv")
            if q_bias is not None and bool(q_bias.abs().max() > 0):
                raise UserError(f"{prefix}to_q has a non-zero bias; ddpmkit's attention has no query bias")
            if v_bias is not None:
                proj = key[: -len("qkv.weight")] + "proj.bias"
                out[proj] = state[f"{prefix}to_out.0.bias"] + state[f"{prefix}to_out.0.weight"] @ v_bias
            continue
        if key.endswith("attention.proj.bias") and key in out:  # already folded with the v bias
            state.pop(name)
            continue
        if name not in state:
            raise UserError(f"the diffusers weights have no {name} (ddpmkit's {key}); the UNet2DModel does not fit")
        t = state.pop(name)
        out[key] = t.reshape(like.shape) if key.endswith("skip.weight") else t
    if state:
        raise UserError(f"the diffusers weights have {len(state)} weights ddpmkit's U-Net has no place for, e.g. "
                        f"{sorted(state)[:3]}")
    return out


# ---- the schedule ------------------------------------------------------------------------------
def _named_schedule(config: DiffusionConfig) -> dict:
    """The diffusers beta_schedule arguments closest to ddpmkit's schedule name."""
    start, end = beta_range(config.schedule, config.num_steps, config.beta_start, config.beta_end)
    return {"cosine": {"beta_schedule": "squaredcos_cap_v2"},
            "linear": {"beta_schedule": "linear", "beta_start": start, "beta_end": end},
            "quadratic": {"beta_schedule": "scaled_linear", "beta_start": start, "beta_end": end},
            "sigmoid": {"beta_schedule": "sigmoid", "beta_start": start, "beta_end": end}}[config.schedule]


def _same_betas(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(((a.double() - b.double()).abs() <= BETA_RTOL * b.double().abs()).all())


def scheduler_config(config: RunConfig) -> dict:
    """DDPMScheduler's arguments for the run: T, β (a named schedule when its float32 table
    equals ddpmkit's to BETA_RTOL, else trained_betas), prediction, variance and the static
    clipping of x̂_0 to [-1, 1] that ddpmkit's image samplers apply by default."""
    from diffusers import DDPMScheduler

    d = config.diffusion
    if d.prediction not in PREDICTION_TYPES:
        raise UserError(f"prediction {d.prediction!r} has no diffusers prediction_type")
    betas = make_betas(d.schedule, d.num_steps, beta_start=d.beta_start, beta_end=d.beta_end)
    named = _named_schedule(d)
    args = {"num_train_timesteps": d.num_steps, "beta_start": 0.0001, "beta_end": 0.02, "trained_betas": None, **named,
            "variance_type": VARIANCE_TYPES[d.variance], "clip_sample": True, "clip_sample_range": 1.0,
            "prediction_type": PREDICTION_TYPES[d.prediction], "thresholding": False, "dynamic_thresholding_ratio": 0.995,
            "sample_max_value": 1.0, "timestep_spacing": "leading", "steps_offset": 0, "rescale_betas_zero_snr": False}
    if not _same_betas(DDPMScheduler(**{k: v for k, v in args.items() if k != "trained_betas"}).betas, betas):
        args["trained_betas"] = betas.tolist()  # float64 values: diffusers casts them to float32
    return args


def diffusion_config(scheduler: dict) -> DiffusionConfig:
    """ddpmkit's DiffusionConfig of a DDPMScheduler config: the ddpmkit schedule whose β equal
    the scheduler's (to BETA_RTOL), or one line saying none does."""
    from diffusers import DDPMScheduler

    betas = DDPMScheduler.from_config(scheduler).betas
    T = len(betas)
    ends = {"beta_start": None, "beta_end": None}
    name = next((n for n in SCHEDULES if _same_betas(betas, make_betas(n, T).float())), None)
    if name is None and "beta_start" in scheduler and "beta_end" in scheduler:  # a ranged schedule with its own ends
        own = {"beta_start": float(scheduler["beta_start"]), "beta_end": float(scheduler["beta_end"])}
        try:
            name = next((n for n in RANGED if _same_betas(betas, make_betas(n, T, **own).float())), None)
        except UserError:  # ends no ddpmkit schedule takes
            name = None
        ends = own if name is not None else ends
    if name is None:
        raise UserError(f"the pipeline's β schedule ({scheduler.get('beta_schedule')}, T = {T}) is none of ddpmkit's "
                        f"schedules ({', '.join(SCHEDULES)}) at T = {T}")
    prediction = {v: k for k, v in PREDICTION_TYPES.items()}.get(scheduler.get("prediction_type", "epsilon"))
    variance = VARIANCES_BACK.get(scheduler.get("variance_type", "fixed_small"))
    if prediction is None or variance is None:
        raise UserError(f"the pipeline's prediction_type {scheduler.get('prediction_type')!r} or variance_type "
                        f"{scheduler.get('variance_type')!r} has no ddpmkit counterpart")
    return DiffusionConfig(schedule=name, num_steps=T, prediction=prediction, variance=variance, **ends)


# ---- the folder --------------------------------------------------------------------------------
def _json(content: dict) -> str:
    return json.dumps(content, indent=2, sort_keys=True) + "\n"


def write_pipeline(out: Path, config: RunConfig, state: dict[str, torch.Tensor]) -> list[Path]:
    """Write the DDPMPipeline folder of a run's U-Net weights `state` into `out` (each file
    atomically); the mapped weights are loaded strictly into diffusers' UNet2DModel first, so
    a name or shape left over on either side stops the export. Returns the files written."""
    diffusers = require_diffusers()
    from safetensors.torch import save_file

    unet_args = unet_config(config)
    tensors = to_diffusers({k: v.detach().cpu() for k, v in state.items()})
    model = diffusers.UNet2DModel(**unet_args)
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if expected[k].shape != tensors[k].shape)
    if missing or unexpected or wrong:  # a bug in the mapping, never the user's input
        raise RuntimeError(f"diffusers mapping incomplete: missing {missing[:3]}, unexpected {unexpected[:3]}, shape {wrong[:3]}")
    version = diffusers.__version__
    out = Path(out)
    for sub in ("scheduler", "unet"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / MODEL_INDEX, _json({"_class_name": "DDPMPipeline", "_diffusers_version": version,
                                                "scheduler": ["diffusers", "DDPMScheduler"], "unet": ["diffusers", "UNet2DModel"]}))
    atomic_write_text(out / SCHEDULER_CONFIG, _json({"_class_name": "DDPMScheduler", "_diffusers_version": version,
                                                     **scheduler_config(config)}))
    atomic_write_text(out / UNET_CONFIG, _json({"_class_name": "UNet2DModel", "_diffusers_version": version, **unet_args}))
    atomic_write(out / UNET_WEIGHTS, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    return [out / f for f in FILES]


def read_pipeline(path: Path) -> tuple[UNetConfig, DiffusionConfig, tuple[int, int], dict[str, torch.Tensor]]:
    """A saved diffusers pipeline folder (DDPMPipeline, DDIMPipeline, ...: a UNet2DModel in
    unet/, a scheduler in scheduler/) as ddpmkit's U-Net config, diffusion config, image size
    (height, width) and U-Net weights; one line says which part does not fit."""
    diffusers = require_diffusers()
    path = Path(path)
    if not (path / UNET_CONFIG).is_file() or not (path / SCHEDULER_CONFIG).is_file():
        raise UserError(f"{path} is not a saved diffusers pipeline folder (no {UNET_CONFIG} or {SCHEDULER_CONFIG}); "
                        "save one with pipeline.save_pretrained(PATH)")
    cfg = json.loads((path / UNET_CONFIG).read_text())
    if cfg.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise UserError(f"{path}/unet is a {cfg['_class_name']}; ddpmkit imports only UNet2DModel pipelines")
    net = fit_unet(cfg)
    diffusion = diffusion_config(json.loads((path / SCHEDULER_CONFIG).read_text()))
    if net.out_channels != net.in_channels * (2 if diffusion.variance == "learned_range" else 1):
        raise UserError(f"the UNet2DModel has {net.out_channels} output channels for {net.in_channels} input channels and "
                        f"variance_type {diffusion.variance}; ddpmkit needs {'twice' if diffusion.variance == 'learned_range' else 'as many as'} the inputs")
    # from_pretrained reads any saved format (.safetensors, .bin) and the old attention names (query, key, ...).
    model = diffusers.UNet2DModel.from_pretrained(str(path / "unet"), low_cpu_mem_usage=False)
    size = cfg["sample_size"]
    image_size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    return net, diffusion, image_size, from_diffusers(model.state_dict(), net)


def check_format(format: str, option: str = "--format") -> None:
    """The other tool's format a run is exported to (--format) or imported from (--from): diffusers, the one known."""
    if format != "diffusers":
        raise UserError(f"{option} {format!r} is not known; ddpmkit {'imports' if option == '--from' else 'exports'} {option} diffusers")


def import_run(source: Path, out: Path, data: str | None = None) -> RunConfig:
    """A saved pipeline (read_pipeline) as a run directory `out`: config.json (`data`: the data set
    it was trained on, what evaluate measures against) and its weights as both ema.safetensors
    and model.safetensors, once they have loaded into the network the config builds."""
    check_output_folder(out, keep=None)
    net, diffusion, size, weights = read_pipeline(source)
    config = RunConfig(data=DataConfig(name=data or f"diffusers:{source}", image_size=size, channels=net.in_channels,
                                       num_classes=net.num_classes), net=net, diffusion=diffusion,
                       conditional=net.num_classes > 0)
    checkpoint.load_matching(build_net(config), weights, source)  # the weights fit the config
    write_config(out, config)
    for name in ("ema", "model"):
        checkpoint.save_weights(weights_file(out, name), weights)
    return config
