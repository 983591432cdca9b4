"""Feature extractors for sample-quality measures, kept apart from the pure metrics.

Both take uint8 images [N, C, H, W] (as samples and data sets are stored) and return
features [N, F]; each carries a `name`, the `sha256` of its weights and a one-line
`description` / `preprocessing`, so every number made with it can say what it was made with.

- `InceptionFeatures`: the FID network (nets/inception.py) with weights the user supplies
  (`--inception-weights PATH`, or the file an installed FID package left in torch hub's
  cache). Never downloaded. Images are fed as the TF FID graph fed them: uint8 values,
  resized to 299x299 by TF1's resize_bilinear (`resize_bilinear_tf1`), then (x − 128) / 128.
- `OwnFeatures`: a small conv net (nets/convfeatures.py) trained by ddpmkit on the run's own
  labelled data (`train_own_features`), or a fixed random one where there are no labels;
  always trained on the CPU with one thread, whatever device the run uses, so the same data
  and settings give the same weights; saved with the run as features/own.safetensors +
  own.json and reused from there (evaluation.own_features also keeps a copy in ddpmkit's cache).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import checkpoint
from .checkpoint import weights_sha256
from .data.images import to_model_space
from .errors import UserError
from .nets.convfeatures import ConvFeatures, ConvFeaturesConfig
from .rundir import atomic_write_text

# ---- Inception (FID) -----------------------------------------------------------------------
INCEPTION_SIZE = 299
INCEPTION_NAME = "inception-v3-2015-12-05"  # the TF graph of Heusel et al.'s FID
INCEPTION_FILES = (
    "pt_inception-2015-12-05-6726825d.pth",  # pytorch-fid
    "weights-inception-2015-12-05-6726825d.pth",  # torch-fidelity
)
PYTORCH_FID_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
INCEPTION_RESIZE = "bilinear to 299x299 (TF1 resize_bilinear, align_corners=False, no half-pixel centres) from uint8"
INCEPTION_PREPROCESSING = (
    "uint8 images resized to 299x299 by TF1 resize_bilinear (align_corners=False, no half-pixel centres), "
    "then (x - 128) / 128, as the TF FID graph; grey repeated to RGB, alpha dropped"
)


def resize_bilinear_tf1(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize exactly as TensorFlow 1's tf.image.resize_bilinear with
    align_corners=False and no half-pixel centres, the resize inside the FID graph:
    output pixel i samples the input at i · (in / out) (corner-aligned, not centre-aligned),
    interpolating between floor and floor + 1 (clamped at the last row / column).
    x: float [N, C, H, W] → [N, C, size[0], size[1]], computed in float32 as TF does."""
    x = x.to(torch.float32)

    def axis(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scale = torch.tensor(n_in / n_out, dtype=torch.float32)
        src = torch.arange(n_out, dtype=torch.float32) * scale
        lo = src.floor().long()
        return lo, (lo + 1).clamp(max=n_in - 1), (src - lo.to(torch.float32)).to(x.device)

    (y0, y1, dy), (x0, x1, dx) = axis(x.shape[2], size[0]), axis(x.shape[3], size[1])
    top, bottom = x[:, :, y0.to(x.device)], x[:, :, y1.to(x.device)]
    rows = lambda r: r[..., x0.to(x.device)] + (r[..., x1.to(x.device)] - r[..., x0.to(x.device)]) * dx  # noqa: E731
    top, bottom = rows(top), rows(bottom)
    return top + (bottom - top) * dy[:, None]


def to_rgb(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, C, H, W] with C = 1..4 → [N, 3, H, W]: grey repeated, alpha dropped."""
    c = images.shape[1]
    if c in (1, 2):
        return images[:, :1].expand(-1, 3, -1, -1)
    if c in (3, 4):
        return images[:, :3]
    raise UserError(f"Inception features take images with 1 to 4 channels, got {c}")


def find_inception_weights(path: Path | str | None = None) -> Path:
    """The Inception weight file: `path` if given, else the file pytorch-fid or torch-fidelity
    keeps in torch hub's cache (torch.hub.get_dir()/checkpoints). Never downloads."""
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise UserError(f"--inception-weights {path}: no such file; pass the path of {INCEPTION_FILES[0]}")
        return path
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    for name in INCEPTION_FILES:
        if (hub / name).is_file():
            return hub / name
    raise UserError(
        f"no Inception weights found: ddpmkit never downloads them; pass --inception-weights PATH, or put "
        f"{INCEPTION_FILES[0]} (pytorch-fid's port of the TF FID network: {PYTORCH_FID_URL}) in {hub}/"
    )


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _load_tensor_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return checkpoint.load_weights(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # tensors only: nothing is unpickled
    except Exception as e:  # noqa: BLE001 - a corrupt file or one that carries code: the user's to fix
        raise UserError(f"cannot read {path} as a weights-only PyTorch file ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} is not a state dict of tensors; pass {INCEPTION_FILES[0]}")
    return state


class InceptionFeatures:
    """FID's Inception-v3 pool features [N, 2048] from weights the user supplies."""

    dim = 2048

    def __init__(self, weights: Path | str | None = None, device: torch.device | str = "cpu", batch_size: int = 32,
                 *, net: torch.nn.Module | None = None):
        from .nets.inception import FIDInceptionV3

        self.device, self.batch_size = torch.device(device), batch_size
        self.name, self.preprocessing = INCEPTION_NAME, INCEPTION_PREPROCESSING
        if net is not None:  # a ready network (tests use random weights)
            self.net, self.source = net, "given network"
            self.sha256 = weights_sha256(net.state_dict())
        else:
            path = find_inception_weights(weights)
            state = _load_tensor_file(path)
            self.net, self.source = FIDInceptionV3(), str(path)
            own = self.net.state_dict()
            for key in own:  # older saves lack BatchNorm's step counter, which FID never uses
                if key.endswith("num_batches_tracked") and key not in state:
                    state[key] = own[key]
            missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
            wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
            if missing or unexpected or wrong:
                raise UserError(
                    f"{path} does not hold the FID Inception weights (missing {missing[:2]}, unexpected {unexpected[:2]}, "
                    f"shape differs {wrong[:2]}); use {INCEPTION_FILES[0]} from pytorch-fid or torch-fidelity's file"
                )
            self.net.load_state_dict(state)
            self.sha256 = file_sha256(path)
        self.net = self.net.to(self.device).eval().requires_grad_(False)
        self.description = f"{self.name} pool features (sha256 {self.sha256[:12]}, from {self.source})"

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> np.ndarray:
        """uint8 [N, C, H, W] → float64 [N, 2048]."""
        out = []
        for start in range(0, len(images), self.batch_size):
            x = to_rgb(images[start : start + self.batch_size]).to(self.device, torch.float32)  # values 0..255
            x = resize_bilinear_tf1(x, (INCEPTION_SIZE, INCEPTION_SIZE))
            out.append(self.net((x - 128) / 128).double().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, self.dim))

    def identity(self) -> dict:
        return {"name": self.name, "sha256": self.sha256, "resize": INCEPTION_RESIZE, "preprocessing": self.preprocessing}


# ---- ddpmkit's own features ----------------------------------------------------------------
OWN_FILE, OWN_JSON = "own.safetensors", "own.json"
SCALE_IMAGES = 2000  # real images that set the own features' scale


@dataclasses.dataclass(frozen=True)
class OwnTraining:
    """How the own classifier is trained: deterministic for a given data set and seed."""

    seed: int = 0  # initial weights, data split and batch order
    heldout_fraction: float = 0.15  # share of the data kept out of training to measure accuracy
    epochs: int = 20  # passes over the training part ...
    max_steps: int = 2000  # ... but at most this many optimiser steps
    batch_size: int = 64
    lr: float = 2e-3  # AdamW
    weight_decay: float = 1e-4


class OwnFeatures:
    """ddpmkit's own feature network, with its record (own.json)."""

    def __init__(self, net: ConvFeatures, record: dict, device: torch.device | str = "cpu", batch_size: int = 256):
        self.net = net.to(device).eval().requires_grad_(False)
        self.record, self.device, self.batch_size = record, torch.device(device), batch_size
        self.name, self.sha256, self.dim = record["name"], record["sha256"], net.config.feature_dim
        self.preprocessing = "uint8 images as the run stores them, x / 127.5 - 1" + (
            f", area-averaged to {net.config.input_size[0]}x{net.config.input_size[1]}"
            if net.config.input_size != tuple(net.config.image_size) else "")
        if record["kind"] == "classifier":
            acc = record.get("heldout_accuracy")
            acc_text = f", held-out accuracy {100 * acc:.1f}%" if acc is not None else ""
            what = f"conv classifier trained on {record['data']['name']} ({record['data']['num_classes']} classes{acc_text})"
        else:
            what = f"randomly initialised conv net, fixed by seed {record['training']['seed']} (untrained: {record['data']['name']} has no labels)"
        self.description = f"{self.name}: {what}, {self.dim}-d pooled features (sha256 {self.sha256[:12]})"

    @property
    def is_classifier(self) -> bool:
        return self.net.head is not None

    @torch.no_grad()
    def _batches(self, images: torch.Tensor, fn) -> torch.Tensor:
        out = [fn(to_model_space(images[s : s + self.batch_size].to(self.device))).double().cpu()
               for s in range(0, len(images), self.batch_size)]
        return torch.cat(out) if out else torch.zeros((0, self.dim), dtype=torch.float64)

    def features(self, images: torch.Tensor) -> np.ndarray:
        """uint8 [N, C, H, W] → float64 [N, F]."""
        return self._batches(images, self.net.features).numpy()

    def predict_proba(self, images: torch.Tensor) -> np.ndarray:
        """Class probabilities [N, classes] (classifier only)."""
        return self._batches(images, lambda x: self.net(x).softmax(1)).numpy()

    def identity(self) -> dict:
        size = self.net.config.input_size
        resize = "none" if size == tuple(self.net.config.image_size) else f"area average to {size[0]}x{size[1]}"
        return {"name": self.name, "sha256": self.sha256, "resize": resize, "preprocessing": self.preprocessing}

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        checkpoint.save_weights(directory / OWN_FILE, self.net.state_dict())
        atomic_write_text(directory / OWN_JSON, json.dumps(self.record, indent=2))

    @classmethod
    def load(cls, directory: Path, device: torch.device | str = "cpu") -> "OwnFeatures":
        try:
            record = json.loads((directory / OWN_JSON).read_text())
            config = ConvFeaturesConfig(**{**record["config"], "image_size": tuple(record["config"]["image_size"])})
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"{directory / OWN_JSON} is unreadable ({e}); delete {directory} to train the features again") from None
        weights = checkpoint.load_weights(directory / OWN_FILE)
        if weights_sha256(weights) != record.get("sha256"):
            raise UserError(f"{directory / OWN_FILE} does not match the sha256 in {OWN_JSON}; delete {directory} to train the features again")
        net = ConvFeatures(config)
        net.load_state_dict(weights)
        return cls(net, record, device)


@contextlib.contextmanager
def _one_cpu_thread():
    """One intra-op thread for the duration: CPU kernels then add up in one fixed order,
    whatever the machine's core count (and a net this small is faster so)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def train_own_features(dataset, data: dict, training: OwnTraining = OwnTraining(), device: torch.device | str = "cpu",
                       report=lambda message: None) -> OwnFeatures:
    """Train the own classifier on a labelled ImageDataset (or fix a random net when it has no
    labels). Always on the CPU with one thread, whatever `device` is (only where the returned
    extractor runs): the same data and settings give the same weights (and hash) on any
    device and core count, for a given torch build.
    `data`: what the data is (name, size, channels, ...), recorded in own.json."""
    channels, size = dataset.channels, tuple(dataset.image_size)
    labelled = dataset.labels is not None and dataset.num_classes >= 2
    config = ConvFeaturesConfig(in_channels=channels, image_size=size, num_classes=dataset.num_classes if labelled else 0)
    record = {
        "name": "own-classifier" if labelled else f"random-conv-seed{training.seed}",
        "kind": "classifier" if labelled else "random",
        "config": dataclasses.asdict(config),
        "data": {**data, "num_images": len(dataset), "num_classes": dataset.num_classes if labelled else 0},
        "training": dataclasses.asdict(training),
    }
    with _one_cpu_thread():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(training.seed)
            net = ConvFeatures(config)
        if labelled:
            record.update(_fit_classifier(net, dataset, training, report))
        some = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(training.seed))[:SCALE_IMAGES]
        with torch.no_grad():
            pooled = net.pooled(_model_input(dataset, some.sort().values, config)[0])
        net.feature_scale.fill_(float(pooled.square().mean().sqrt()))  # E‖f‖²/F = 1 on the data
    record["feature_scale"] = float(net.feature_scale)
    record["sha256"] = weights_sha256(net.state_dict())
    return OwnFeatures(net, record, device)


def _fit_classifier(net: ConvFeatures, dataset, training: OwnTraining, report) -> dict:
    """AdamW on cross-entropy, on the CPU; a seeded split keeps `heldout_fraction` out to measure accuracy."""
    n = len(dataset)
    g = torch.Generator().manual_seed(training.seed)
    order = torch.randperm(n, generator=g)
    n_held = int(round(training.heldout_fraction * n)) if n >= 20 else 0
    held, train = order[:n_held], order[n_held:]
    x, y = _model_input(dataset, train, net.config)
    steps = min(training.max_steps, training.epochs * math.ceil(len(train) / training.batch_size))
    report(f"training the own feature classifier on the CPU: {steps} steps on {len(train):,} labelled images ({n_held:,} held out)")
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=training.lr, weight_decay=training.weight_decay)
    batches = torch.cat([torch.randperm(len(train), generator=g) for _ in range(-(-steps * training.batch_size // len(train)))])
    for step in range(steps):
        idx = batches[step * training.batch_size : (step + 1) * training.batch_size]
        loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    accuracy = None
    if n_held:
        held_x, held_labels = _model_input(dataset, held, net.config)
        with torch.no_grad():
            logits = torch.cat([net(held_x[s : s + 512]) for s in range(0, n_held, 512)])
        accuracy = float((logits.argmax(1) == held_labels).double().mean())
    return {"heldout_accuracy": accuracy, "heldout_images": n_held, "train_images": len(train), "train_steps": steps,
            "final_train_loss": float(loss.detach())}


def _model_input(dataset, indices: torch.Tensor, config: ConvFeaturesConfig, chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Images at `indices` in [-1, 1], already averaged down to the net's input size (a large
    data set then fits in memory), and their labels; read `chunk` images at a time."""
    xs, ys = [], []
    for s in range(0, len(indices), chunk):
        images, labels = dataset.batch(indices[s : s + chunk].tolist())
        x = to_model_space(images)
        if tuple(x.shape[-2:]) != config.input_size:
            x = F.adaptive_avg_pool2d(x, config.input_size)
        xs.append(x)
        ys.append(labels)
    return torch.cat(xs), torch.cat(ys)
