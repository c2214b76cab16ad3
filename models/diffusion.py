"""Gaussian diffusion as in improved DDPM, the way MAR's ``diffusion/`` package configures it (§3.1).

Cosine noise schedule over 1000 training steps, epsilon prediction with a learned-range variance, the
"hybrid" loss (MSE on epsilon + the variational bound with the epsilon prediction detached, loss type MSE,
so the bound is not rescaled), respacing to fewer steps for sampling (the model always sees the original
step index), and ancestral sampling with a temperature on the noise and MAR's classifier-free guidance.

A model function has the signature ``model_fn(x_t [N, C], t_original [N], cond [N, D]) -> [N, 2C]``:
the first C channels are epsilon, the last C the variance interpolation value v (nominally in [-1, 1]).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

ModelFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def cosine_alpha_bar(t: torch.Tensor | np.ndarray | float) -> torch.Tensor | np.ndarray | float:
    """ᾱ(t) = cos²((t + s) / (1 + s) · π/2), s = 0.008, continuous t in [0, 1] (IDDPM eq. 17, not divided
    by ᾱ(0): only ratios of it enter the betas)."""
    arg = (t + 0.008) / 1.008 * math.pi / 2
    if torch.is_tensor(t):
        return torch.cos(arg) ** 2
    return np.cos(arg) ** 2 if isinstance(t, np.ndarray) else math.cos(arg) ** 2


def make_betas(schedule: str, num_steps: int) -> np.ndarray:
    """float64 betas of the named schedule ("cosine" or "linear"), both defined for any ``num_steps``."""
    if schedule == "cosine":  # beta capped at 0.999: the last step would otherwise be exactly 1
        return np.array([min(1 - cosine_alpha_bar((i + 1) / num_steps) / cosine_alpha_bar(i / num_steps), 0.999)
                         for i in range(num_steps)], dtype=np.float64)
    if schedule == "linear":  # Ho et al. 2020, stretched so that other step counts cover the same range
        scale = 1000 / num_steps
        return np.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=np.float64)
    raise ValueError(f"unknown noise schedule {schedule!r}; valid choices: cosine, linear")


def space_timesteps(num_steps: int, section_counts: str | int | list[int]) -> set[int]:
    """Steps kept by IDDPM's respacing. ``"100"`` keeps 100 steps at a fractional stride (rounded) that
    hits both 0 and ``num_steps - 1``; ``"10,20"`` splits the range into equal sections with 10 and 20."""
    counts = section_counts if isinstance(section_counts, list) else [int(c) for c in str(section_counts).split(",")]
    size_per, extra = divmod(num_steps, len(counts))
    kept: set[int] = set()
    start = 0
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if not 0 < count <= size:
            raise ValueError(f"cannot keep {count} steps of a section of {size}")
        stride, pos = (size - 1) / (count - 1) if count > 1 else 1.0, 0.0
        for _ in range(count):  # accumulated, not k * stride: the float sums round like the reference's
            kept.add(start + round(pos))
            pos += stride
        start += size
    return kept


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) in nats, elementwise."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_loglik(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """ADM's decoder log-likelihood (nats) of x in [-1, 1] quantised to 256 bins, edge bins open-ended; used
    as is for MAR's unbounded latents too. The normal CDF is ADM's tanh approximation."""
    def cdf(v: torch.Tensor) -> torch.Tensor:
        return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v**3)))

    def log(v: torch.Tensor) -> torch.Tensor:
        return torch.log(v.clamp(min=1e-12))

    inv_std = torch.exp(-log_scale)
    cdf_plus, cdf_min = cdf(inv_std * (x - mean + 1 / 255)), cdf(inv_std * (x - mean - 1 / 255))
    return torch.where(x < -0.999, log(cdf_plus), torch.where(x > 0.999, log(1 - cdf_min), log(cdf_plus - cdf_min)))


class GaussianDiffusion:
    """Diffusion over ``len(betas)`` steps. ``timestep_map[i]`` is the original step number of step i (the
    identity unless respaced); the model is always called with the original numbers."""

    def __init__(self, betas: np.ndarray, timestep_map: list[int] | np.ndarray | None = None) -> None:
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or not ((betas > 0) & (betas <= 1)).all():
            raise ValueError("betas must be a 1-D array in (0, 1]")
        self.betas, self.num_timesteps = betas, len(betas)
        self.timestep_map = np.arange(len(betas)) if timestep_map is None else np.asarray(timestep_map, dtype=np.int64)
        alphas = 1.0 - betas
        self.alphas_cumprod = ac = np.cumprod(alphas)
        self.alphas_cumprod_prev = ac_prev = np.append(1.0, ac[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(ac)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - ac)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / ac)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / ac - 1.0)
        self.log_betas = np.log(betas)
        self.posterior_variance = betas * (1.0 - ac_prev) / (1.0 - ac)
        # the posterior variance is 0 at t = 0: its log takes the t = 1 value (IDDPM)
        self.posterior_log_variance_clipped = np.log(np.append(self.posterior_variance[1], self.posterior_variance[1:])
                                                     if len(betas) > 1 else self.posterior_variance)
        self.posterior_mean_coef1 = betas * np.sqrt(ac_prev) / (1.0 - ac)
        self.posterior_mean_coef2 = (1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac)
        self._cache: dict[tuple, torch.Tensor] = {}
        self.materialize(torch.device("cpu"))

    TABLES = ("sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod", "posterior_mean_coef1", "posterior_mean_coef2",
              "posterior_variance", "posterior_log_variance_clipped", "log_betas", "sqrt_recip_alphas_cumprod",
              "sqrt_recipm1_alphas_cumprod")

    def materialize(self, device: torch.device) -> None:
        """Put every table on ``device`` now (the module's ``.to`` calls this), so a compiled step finds a
        filled cache instead of filling it while traced (a recompile)."""
        for dtype in (torch.float32, torch.float64):
            for name in self.TABLES:
                self._cache.setdefault((name, device, dtype), torch.as_tensor(getattr(self, name), dtype=dtype,
                                                                               device=device))
        self._cache.setdefault(("timestep_map", device),
                               torch.as_tensor(self.timestep_map, dtype=torch.long, device=device))

    def _at(self, name: str, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-row value of the table ``name`` at steps t, shaped to broadcast against x. Tables are kept on
        the device once (float64 only for float64 x) so the sampling loop does no host copies."""
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        key = (name, t.device, dtype)
        if key not in self._cache:
            self._cache[key] = torch.as_tensor(getattr(self, name), dtype=dtype, device=t.device)
        return self._cache[key][t].view(-1, *([1] * (x.ndim - 1)))

    def original_steps(self, t: torch.Tensor) -> torch.Tensor:
        """The step numbers the model is conditioned on (respaced index -> original index)."""
        key = ("timestep_map", t.device)
        if key not in self._cache:
            self._cache[key] = torch.as_tensor(self.timestep_map, dtype=torch.long, device=t.device)
        return self._cache[key][t]

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t ~ q(x_t | x_0) = N(sqrt(ᾱ_t) x_0, (1 - ᾱ_t) I) with the given standard-normal noise."""
        return self._at("sqrt_alphas_cumprod", t, x0) * x0 + self._at("sqrt_one_minus_alphas_cumprod", t, x0) * noise

    def q_posterior_mean_variance(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
                                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
        mean = self._at("posterior_mean_coef1", t, x_t) * x0 + self._at("posterior_mean_coef2", t, x_t) * x_t
        return mean, self._at("posterior_variance", t, x_t), self._at("posterior_log_variance_clipped", t, x_t)

    def p_mean_variance(self, model_out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                        clip_denoised: bool = False) -> dict[str, torch.Tensor]:
        """p(x_{t-1} | x_t) from the model output [eps, v]: learned-range variance
        log σ² = f log β_t + (1 - f) log β̃_t with f = (v + 1) / 2, mean = posterior mean at x̂_0(eps)."""
        eps, v = model_out.chunk(2, dim=1)
        frac = (v + 1) / 2
        log_var = frac * self._at("log_betas", t, x_t) + (1 - frac) * self._at("posterior_log_variance_clipped", t, x_t)
        x0 = self._at("sqrt_recip_alphas_cumprod", t, x_t) * x_t - self._at("sqrt_recipm1_alphas_cumprod", t, x_t) * eps
        if clip_denoised:  # only for data known to lie in [-1, 1] (pixels); MAR's latents are never clipped
            x0 = x0.clamp(-1, 1)
        mean = self.q_posterior_mean_variance(x0, x_t, t)[0]
        return {"mean": mean, "log_variance": log_var, "pred_xstart": x0, "eps": eps}

    def training_losses(self, model_fn: ModelFn, x0: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                        noise: torch.Tensor | None = None) -> torch.Tensor:
        """Per-row hybrid loss [N]: mean_c (ε - ε̂)² + vb, vb = KL(q(x_{t-1}|x_t,x_0) ‖ p(x_{t-1}|x_t)) in bits
        per channel (the decoder NLL at t = 0). ε̂ is detached in vb so that only the variance learns from it."""
        noise = torch.randn_like(x0) if noise is None else noise
        x_t = self.q_sample(x0, t, noise)
        eps, v = model_fn(x_t, self.original_steps(t), cond).chunk(2, dim=1)
        mse = ((noise - eps) ** 2).mean(dim=1)
        p = self.p_mean_variance(torch.cat([eps.detach(), v], dim=1), x_t, t)
        true_mean, _, true_log_var = self.q_posterior_mean_variance(x0, x_t, t)
        kl = normal_kl(true_mean, true_log_var, p["mean"], p["log_variance"]).mean(dim=1)
        nll = -discretized_gaussian_loglik(x0, p["mean"], 0.5 * p["log_variance"]).mean(dim=1)
        return mse + torch.where(t == 0, nll, kl) / math.log(2.0)

    @torch.no_grad()
    def p_sample_loop(self, model_fn: ModelFn, shape: tuple[int, ...], cond: torch.Tensor, temperature: float = 1.0,
                      generator: torch.Generator | None = None, cfg: float | torch.Tensor | None = None,
                      clip_denoised: bool = False, noise: torch.Tensor | None = None,
                      draws: torch.Tensor | None = None) -> torch.Tensor:
        """Ancestral sampling over all steps of this diffusion, from standard-normal noise (or ``noise``):
        x_{t-1} = mean + exp(logvar / 2) · τ · z, nothing added at the last step.

        With ``cfg`` (a scale, or one per row of a half [N/2]) the batch is MAR's [cond; uncond]: one noise draw
        serves both halves, the model sees the first half's x twice, only ε is guided
        (ε_u + s (ε_c - ε_u), written to both halves) and each half keeps its own variance; the result has the
        full size and its first half is the guided sample. All draws come from ``generator`` when given, or are the
        rows of ``draws`` [num_timesteps, N (N/2 guided), *shape[1:]] in the order the loop would draw them
        (``draw_all``): a compiled decoding step has no generator inside its graph."""
        device = cond.device
        guided = cfg is not None
        if guided and shape[0] % 2:
            raise ValueError("with cfg the batch must be [cond; uncond] halves of equal size")
        n = shape[0] // 2 if guided else shape[0]
        draw_device = generator.device if generator is not None else device

        drawn = 0

        def draw() -> torch.Tensor:  # guided: the same noise for both halves, as in MAR
            nonlocal drawn
            if draws is not None:
                z, drawn = draws[drawn].to(device), drawn + 1
            else:
                z = torch.randn((n, *shape[1:]), generator=generator, device=draw_device).to(device)
            return torch.cat([z, z]) if guided else z

        scale = cfg.to(device).reshape(-1, *([1] * (len(shape) - 1))) if torch.is_tensor(cfg) else cfg
        x = draw() if noise is None else noise.to(device)
        for i in reversed(range(self.num_timesteps)):
            t = torch.full((shape[0],), i, device=device, dtype=torch.long)
            p = self.p_mean_variance(_guided_output(model_fn, x, self.original_steps(t), cond, scale), x, t, clip_denoised)
            x = p["mean"]
            if i > 0:  # drawn whatever τ is, so the random stream does not depend on the temperature
                x = x + torch.exp(0.5 * p["log_variance"]) * draw() * temperature
        return x


    def draw_all(self, n: int, shape: tuple[int, ...], device: torch.device,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Every standard-normal draw ``p_sample_loop`` makes for n rows of ``shape`` (per guided half), drawn
        now in the loop's order: [num_timesteps, n, *shape], the same numbers the loop would draw itself."""
        draw_device = generator.device if generator is not None else device
        draws = torch.stack([torch.randn((n, *shape), generator=generator, device=draw_device)
                             for _ in range(self.num_timesteps)])
        if draws.device.type == "cpu" and torch.device(device).type == "cuda":  # a host generator: one async copy
            return draws.pin_memory().to(device, non_blocking=True)
        return draws.to(device)


@torch.compiler.nested_compile_region
def _guided_output(model_fn: ModelFn, x: torch.Tensor, steps: torch.Tensor, cond: torch.Tensor,
                   scale: float | torch.Tensor | None) -> torch.Tensor:
    """The model's output at x_t (guided: MAR's forward_with_cfg, both halves see the cond half's x, only ε is
    guided). One nested compile region: a compiled decoding step unrolls the sampling loop and reuses this per step."""
    if scale is None:
        return model_fn(x, steps, cond)
    n = x.shape[0] // 2
    eps, rest = model_fn(torch.cat([x[:n], x[:n]]), steps, cond).chunk(2, dim=1)
    half = eps[n:] + scale * (eps[:n] - eps[n:])
    return torch.cat([torch.cat([half, half]), rest], dim=1)


def create_diffusion(timestep_respacing: str | int | None = None, noise_schedule: str = "cosine",
                     num_steps: int = 1000) -> GaussianDiffusion:
    """MAR's ``create_diffusion``: ``None``/``""`` keeps all ``num_steps`` steps, ``"100"`` (or 100) respaces.
    The respaced betas come from consecutive ᾱ of the kept steps, so ᾱ at every kept step is unchanged."""
    betas = make_betas(noise_schedule, num_steps)
    kept = sorted(space_timesteps(num_steps, timestep_respacing or num_steps))
    alphas_cumprod = np.cumprod(1.0 - betas)[kept]
    new_betas = 1.0 - alphas_cumprod / np.append(1.0, alphas_cumprod[:-1])
    return GaussianDiffusion(new_betas, timestep_map=kept)
