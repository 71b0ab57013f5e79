"""The VAE-GAN's training step: three losses, each on its own parameters, one guard for all.

The trainer (:class:`vaekit.training.trainer.Trainer`) runs :meth:`AdversarialUpdate.step` in place of its
plain step when the model is a :class:`~vaekit.models.vaegan.VAEGAN`. Its own Adam steps the encoder,
decoder and prior (their parameters, :meth:`AdversarialUpdate.trainer_parameters`); this object
keeps a second Adam for the discriminator, whose state the trainer checkpoints with its own
(:meth:`AdversarialUpdate.optimizers`). Both follow ``--lr`` and its schedule.

Against instability (GANs diverge or collapse):

- the trainer's guard covers both updates: a non-finite loss or gradient anywhere skips the
  whole step (both Adam steps, on the device, no host sync) and counts towards ``max_skips``;
  ``clip_grad`` clips the two sets of gradients separately;
- the balance rule of Larsen et al.'s code: when the discriminator's cross-entropy on the data
  or on the generated examples falls below ``EQUILIBRIUM - MARGIN`` (it wins too easily), its
  step is skipped; when one rises above ``EQUILIBRIUM + MARGIN`` (it is no guide), the decoder's
  GAN term is left out of that step (the decoder still follows ``gamma * L_llike``; their code
  skips the decoder's whole step instead, which one Adam for encoder and decoder cannot do);
  when both would pause, neither does. Each epoch's row counts the paused steps.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from vaekit.errors import ConfigError
from vaekit.parts.objectives import LossTerms, summed_loss
from vaekit.compute.runtime import AdamStep, make_adam
from .vaegan import VAEGAN, forward

# The discriminator's mean cross-entropy when it cannot tell (D = 1/2) is ln 2 = 0.693; Larsen
# et al.'s code balances around 0.68 with a margin of 0.35.
EQUILIBRIUM = 0.68
MARGIN = 0.35
STATS = ("dis_loss", "dis_real", "dis_recon", "dis_prior", "dis_paused", "gan_paused", "pixel_rec")


class AdversarialUpdate:
    """One VAE-GAN step per batch: forward, the three restricted backward passes, the guard,
    the two Adam steps (see :mod:`vaekit.models.vaegan`).

    Parameters
    ----------
    model : VAEGAN
        On the trainer's device.
    trainer : vaekit.training.trainer.Trainer
        Supplies the configuration, the noise generator, the autocast context and, when the
        step runs, its optimizer (made over :meth:`trainer_parameters`).
    """

    binarize = False  # the discriminator compares decoder means with the data as they are

    def __init__(self, model: VAEGAN, trainer) -> None:
        if trainer.world.size > 1:
            raise ConfigError("objective vaegan trains in one process (its three backward "
                              "passes are not wired for DistributedDataParallel); run without torchrun")
        self.model, self.trainer, self.config = model, trainer, trainer.config
        dis = {id(p) for p in model.discriminator.parameters()}
        dec = {id(p) for p in model.decoder.parameters()}
        self.dis_params = list(model.discriminator.parameters())
        self.vae_params = [p for p in model.parameters() if id(p) not in dis and p.requires_grad]
        self.dec_params = [p for p in self.vae_params if id(p) in dec]
        # the encoder's side: encoder, posterior and a learned prior (its KL trains it)
        self.enc_params = [p for p in self.vae_params if id(p) not in dec]
        self.optimizer = make_adam(self.dis_params, self.config.lr)
        fused = bool(self.optimizer.defaults.get("fused"))
        self.adam_step = AdamStep(self.optimizer) if fused else None
        self.sums = torch.zeros(len(STATS) + 1, device=trainer.device)

    def trainer_parameters(self) -> list[torch.nn.Parameter]:
        """The parameters the trainer's optimizer steps: all but the discriminator's."""
        return self.vae_params

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Optimizers besides the trainer's, by name, for the checkpoint."""
        return {"discriminator": self.optimizer}

    # -- one step ----------------------------------------------------------------------------
    def step(self, x: torch.Tensor, noise: torch.Tensor, weight: float, n: int
             ) -> tuple[LossTerms, torch.Tensor, torch.Tensor]:
        """Train on the batch ``x`` (raw data); returns the encoder's per-example terms, its
        batch loss and 1.0 if the step was skipped (non-finite), as the plain step does.

        ``noise`` is the reparameterization noise ``(1, b, latent)``, ``weight`` the KL weight
        of this step, ``n`` the global batch size; ``n`` prior draws come from the trainer's
        noise generator.
        """
        t = self.trainer
        with torch.no_grad():
            z_prior = self.model.sample_prior(n, t.noise_gen)
        with t.autocast:
            out = forward(self.model, x, weight, noise=noise[:1], z_prior=z_prior, track=True)
        losses, on = self.losses(out.terms, out.logits, len(x), weight, n)
        self.backward(*losses)
        bad = self.guarded_steps(losses, on[0])
        self.record(out.logits, len(x), losses[2], on, bad, out.pixel)
        return out.terms, losses[0], bad

    def losses(self, terms: LossTerms, logits: torch.Tensor, b: int, weight: float, n: int
               ) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
        """``(encoder, decoder, discriminator)`` losses, each summed over the batch and divided
        by ``n``, and the balance gates ``(discriminator on, decoder GAN term on)`` as 0/1."""
        real, fake = logits[:b], logits[b:]
        real_cost, fake_cost = F.softplus(-real), F.softplus(fake)  # -log D(x), -log(1 - D(.))
        with torch.no_grad():
            r, f = real_cost.mean(), fake_cost.mean()
            strong = (r < EQUILIBRIUM - MARGIN) | (f < EQUILIBRIUM - MARGIN)
            weak = (r > EQUILIBRIUM + MARGIN) | (f > EQUILIBRIUM + MARGIN)
            neither = strong & weak
            on = torch.stack([~strong | neither, ~weak | neither]).float()
        enc = summed_loss(terms, weight, self.config.free_bits) / n
        gan = F.softplus(-fake).sum()  # non-saturating: -log D(x~) - log D(x_p)
        dec = (self.config.gamma * terms.rec.sum() + on[1] * gan) / n
        dis = (real_cost.sum() + fake_cost.sum()) / n
        return (enc, dec, dis), on

    def backward(self, enc: torch.Tensor, dec: torch.Tensor, dis: torch.Tensor) -> None:
        """Each loss's gradient into its own parameters only (``.grad`` of the others untouched)."""
        for p in (*self.vae_params, *self.dis_params):
            p.grad = None
        enc.backward(inputs=self.enc_params, retain_graph=True)
        dec.backward(inputs=self.dec_params, retain_graph=True)
        dis.backward(inputs=self.dis_params)

    @torch.no_grad()
    def guarded_steps(self, losses: tuple[torch.Tensor, ...], dis_on: torch.Tensor) -> torch.Tensor:
        """Both Adam steps unless a loss or a gradient is non-finite (then neither; returns 1.0);
        the discriminator's also skipped while the balance rule pauses it."""
        t = self.trainer
        total = losses[0] + losses[1] + losses[2]
        if self.config.clip_grad > 0:
            norms = [torch.nn.utils.clip_grad_norm_(ps, self.config.clip_grad, foreach=True)
                     for ps in (self.vae_params, self.dis_params)]
            bad = torch.isfinite(norms[0] + norms[1] + total).logical_not_().float()
        else:
            found = torch.zeros((), device=total.device)
            grads = [p.grad for p in (*self.vae_params, *self.dis_params) if p.grad is not None]
            torch._amp_foreach_non_finite_check_and_unscale_(grads, found, t.unit_scale)
            bad = torch.maximum(found, (~torch.isfinite(total)).float())
        skip_dis = torch.maximum(bad, 1 - dis_on)
        self.optimizer.param_groups[0]["lr"] = t.optimizer.param_groups[0]["lr"]  # one schedule
        for step, opt, skip in ((t.adam_step, t.optimizer, bad),
                                (self.adam_step, self.optimizer, skip_dis)):
            if step is not None:
                step(skip)
            elif not skip.item():  # an unfused Adam (no found_inf): one host sync per step
                opt.step()
        return bad

    @torch.no_grad()
    def record(self, logits: torch.Tensor, b: int, dis: torch.Tensor, on: torch.Tensor,
               bad: torch.Tensor, pixel: torch.Tensor) -> None:
        """Add this step's discriminator numbers and ``-log p(x|z)`` to the epoch's sums (on the
        device)."""
        d = torch.sigmoid(logits)
        stats = torch.stack([dis, d[:b].mean(), d[b: 2 * b].mean(), d[2 * b:].mean(),
                             1 - on[0], 1 - on[1], pixel.detach().float().mean()]).float()
        good = 1 - bad
        self.sums[:-1] += stats.nan_to_num(0.0, 0.0, 0.0) * good
        self.sums[-1] += good

    def end_epoch(self) -> dict[str, Any]:
        """The epoch's means over its finite steps (``dis_loss``: the discriminator's
        cross-entropy per example; ``dis_real``/``dis_recon``/``dis_prior``: its mean D on data,
        reconstructions and prior draws; ``dis_paused``/``gan_paused``: fractions of steps the
        balance rule paused the discriminator or the decoder's GAN term; ``pixel_rec``: the
        likelihood's ``-log p(x|z)`` per example, in nats), then a fresh start."""
        sums = self.sums.tolist()
        self.sums.zero_()
        if self.adam_step is not None:
            self.adam_step.invalidate()  # the optimizer state may be loaded before the next epoch
        steps = sums[-1]
        return {k: (v / steps if steps else float("nan")) for k, v in zip(STATS, sums)}
