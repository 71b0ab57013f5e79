"""Posterior collapse, judged once: from the active units and the total KL of the code, a
plain-words note with what to try, for the end of training, the report and the card."""

from __future__ import annotations

KL_COLLAPSE = 0.1  # nats per example in all: at or below it the code carries ~nothing


def collapse_note(active: int, latent_dim: int, kl: float | None = None,
                  partial: bool = True) -> str | None:
    """A plain-words warning when the posterior carries little or no information (``active``
    of ``latent_dim`` units in use, ``kl`` the total KL in nats per example when known); None
    when the code is in use. ``partial``: also a note when fewer than half the units are used
    (the report says it; the end of training warns only of a collapse)."""
    if active == 0:
        return ("Posterior collapse: no latent dimension carries information about the input "
                "(every q(z|x) matches the prior), so the decoder ignores z and samples all look "
                "alike. Try a smaller --beta, KL warm-up, fewer epochs of a too-strong decoder, or "
                "check that the data vary.")
    if kl is not None and kl <= KL_COLLAPSE:
        return (f"Posterior collapse: the code carries almost no information about the input "
                f"(a KL of only {kl:.3f} nats per example in all, though {active} of {latent_dim} "
                "units vary a little), so reconstructions are close to the data's average. Try "
                "--kl-warmup 10, --free-bits 0.1, a smaller --beta or, for a gaussian likelihood, "
                "--learn-obs-std or a smaller --obs-std.")
    if partial and active < latent_dim / 2:
        return (f"Only {active} of {latent_dim} latent dimensions are in use; the others match the "
                "prior. That is normal when --latent-dim is larger than the data needs, but if "
                "reconstructions are poor, try a smaller --beta.")
    return None
