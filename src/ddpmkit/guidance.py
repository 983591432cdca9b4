"""Every guidance a sample may take, with its scale, as fields of the sampling request
(sampling.SamplingRequest): classifier-free guidance (Ho & Salimans 2021), classifier guidance
(Dhariwal & Nichol 2021), autoguidance by a weaker version of the model (Karras et al. 2024) and
the noise levels they apply at (Kynkäänniemi et al. 2024). They compose in the one denoiser
adapter (denoiser.for_sampling); build.load_guide loads a guide.
"""

from __future__ import annotations

from dataclasses import dataclass

from .denoiser import Denoiser
from .errors import UserError, check_finite

AUTO = "auto"  # autoguide: the run's own guide, RUN/guide.safetensors (the EMA weights at TrainConfig.guide_at)
NO_GUIDE = "none"  # autoguide: off


@dataclass(frozen=True)
class Guide:
    """The guide of autoguidance (Karras et al. 2024): a weaker model of the same data, schedule and prediction."""

    name: str  # what the request named: "auto", "step-N", "posthoc:S[@N]", a run directory or a .safetensors file
    denoiser: Denoiser  # the guide network as x̂_0 and ε̂, unguided and unclipped
    source: str  # the file its weights came from, and what they are, for the records


@dataclass(frozen=True)
class Guidance:
    """Every guidance a sample may take, each with its scale (0: off); they compose in the one
    denoiser adapter (denoiser.for_sampling)."""

    cfg: float = 0.0  # classifier-free guidance w (Eq. 6 of Ho & Salimans 2021): conditional runs; 0 the conditional model
    classifier: float = 0.0  # classifier guidance s (Dhariwal & Nichol 2021) by the run's classifier; 0 off
    autoguide: str | None = None  # autoguidance's guide (Karras et al. 2024): "auto" (RUN/guide.safetensors), "step-N",
    # "posthoc:S[@N]", a run directory or a .safetensors file (build.load_guide); "none" or None: off (the default)
    autoguide_scale: float = 2.0  # w of D_guide + w·(D_main − D_guide): 1 the main model, 0 the guide
    interval: tuple[float, float] | None = None  # (σ_lo, σ_hi), σ_t = √((1 − ᾱ_t)/ᾱ_t): autoguidance and classifier-free
    # guidance only where σ_lo ≤ σ_t ≤ σ_hi (Kynkäänniemi et al. 2024); None: at every step

    def __post_init__(self) -> None:
        # Any finite w: 0 is the conditional model, -1 the unconditional one, below -1 anti-guidance: none is refused.
        check_finite("--guidance", self.cfg)
        check_finite("--classifier-scale", self.classifier)  # any finite s: below 0 guides away from the class
        check_finite("--autoguide-scale", self.autoguide_scale)  # any finite w: above 1 guides away from the guide
        if self.autoguide is not None and not str(self.autoguide).strip():
            raise UserError("--autoguide takes auto, step-N, posthoc:SIGMA_REL[@N], a run directory, a .safetensors file "
                            "or none; got an empty name")
        if self.interval is not None:
            object.__setattr__(self, "interval", _interval(self.interval))

    @property
    def guide(self) -> str | None:
        """The guide autoguidance takes (None: none, whether "none" was asked or nothing was)."""
        return None if self.autoguide in (None, NO_GUIDE) else self.autoguide


def _interval(value) -> tuple[float, float]:
    """A guidance interval (σ_lo, σ_hi), checked: two finite noise levels with 0 ≤ σ_lo < σ_hi."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise UserError(f"--guidance-interval takes two noise levels LO,HI (σ = √((1−ᾱ)/ᾱ)), got {value!r}") from None
    check_finite("--guidance-interval's LO", lo)
    check_finite("--guidance-interval's HI", hi)
    if not 0 <= lo < hi:
        raise UserError(f"--guidance-interval LO,HI needs 0 ≤ LO < HI (noise levels σ = √((1−ᾱ)/ᾱ)), got {lo:g},{hi:g}")
    return lo, hi
