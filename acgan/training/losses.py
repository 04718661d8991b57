"""The AC-GAN objective (paper section 3), on logits, so no softmax is ever applied twice.

L_S = E[log P(S=real | x_real)] + E[log P(S=fake | x_fake)]
L_C = E[log P(C=c | x_real)] + E[log P(C=c | x_fake)]
D maximises L_S + L_C: it minimises BCE(real -> 1) + BCE(fake -> 0) + CE(real class) [+ CE(fake class)].
G maximises L_C - L_S in the non-saturating form: it minimises BCE(fake -> 1) + CE(fake class).
`fake_class_term=False` drops D's fake-image class term, as the Keras example and StudioGAN do (the paper keeps it).

Not in the paper: TAC-GAN's objective (Gong et al., NeurIPS 2019, `tac_discriminator_loss`, `tac_generator_loss`).
AC-GAN's G, rewarded for samples D's classifier finds easy, lowers the conditional entropy H(Y|X) of its images and
drifts away from where classes overlap. A twin class head C_mi, trained on generated images only, estimates the class
given a generated image; D adds CE(C_mi(x_g), y) and G adds -CE(C_mi(x_g), y) beside its CE(C(x_g), y), weight 1, as
TAC-BigGAN/train_fns.py does (`Twin_AC`: `C_loss - MI_loss`). The twin term is on the twin head, not the main one:
StudioGAN's TACGAN computes it on the main head, where G's two class terms cancel.

Also not in the paper: `mode_seeking_loss` (Mao et al. 2019, MSGAN), for G, against the within-class collapse that the
paper measures with MS-SSIM: two samples of the same class from different z should differ in proportion to their z.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def discriminator_loss(D, x_real: torch.Tensor, y_real: torch.Tensor, x_fake: torch.Tensor, y_fake: torch.Tensor,
                       fake_class_term: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (loss, stats) with stats = [source acc real, source acc fake, class acc real, class acc fake]."""
    return _source_and_class_loss(D(x_real), D(x_fake), y_real, y_fake, fake_class_term)


def generator_loss(D, x_fake: torch.Tensor, y_fake: torch.Tensor) -> torch.Tensor:
    src_fake, cls_fake, _ = D(x_fake)
    return F.binary_cross_entropy_with_logits(src_fake, torch.ones_like(src_fake)) + F.cross_entropy(cls_fake, y_fake)


def tac_discriminator_loss(D, x_real: torch.Tensor, y_real: torch.Tensor, x_fake: torch.Tensor, y_fake: torch.Tensor,
                           fake_class_term: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """D's AC-GAN loss plus its twin head's cross-entropy on the generated images, the only images that head is
    trained on (its logits on real images are left unused); the same stats as `discriminator_loss`."""
    fake = D(x_fake)
    loss, stats = _source_and_class_loss(D(x_real), fake, y_real, y_fake, fake_class_term)
    return loss + F.cross_entropy(fake[2], y_fake), stats


def tac_generator_loss(D, x_fake: torch.Tensor, y_fake: torch.Tensor) -> torch.Tensor:
    """G's AC-GAN loss minus the twin head's cross-entropy on its images: G is pushed towards images the main head
    names and away from those the twin head names easily."""
    src_fake, cls_fake, twin_fake = D(x_fake)
    return (F.binary_cross_entropy_with_logits(src_fake, torch.ones_like(src_fake)) + F.cross_entropy(cls_fake, y_fake)
            - F.cross_entropy(twin_fake, y_fake))


# Each objective's (D loss, G loss), by the `objective` setting's values.
OBJECTIVES = {"acgan": (discriminator_loss, generator_loss), "tac": (tac_discriminator_loss, tac_generator_loss)}


def _source_and_class_loss(real: tuple, fake: tuple, y_real: torch.Tensor, y_fake: torch.Tensor,
                           fake_class_term: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """AC-GAN's D loss and stats from D's outputs on the real and on the generated batch."""
    (src_real, cls_real, _), (src_fake, cls_fake, _) = real, fake
    loss_source = (F.binary_cross_entropy_with_logits(src_real, torch.ones_like(src_real))
                   + F.binary_cross_entropy_with_logits(src_fake, torch.zeros_like(src_fake)))
    loss_class = F.cross_entropy(cls_real, y_real)
    if fake_class_term:
        loss_class = loss_class + F.cross_entropy(cls_fake, y_fake)
    with torch.no_grad():
        stats = torch.stack([(src_real > 0).float().mean(), (src_fake < 0).float().mean(),
                             (cls_real.argmax(1) == y_real).float().mean(),
                             (cls_fake.argmax(1) == y_fake).float().mean()])
    return loss_source + loss_class, stats


def mode_seeking_loss(x_fake: torch.Tensor, z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """The batch's first and second halves are pairs of the same class; the loss falls as their images move apart
    relative to their noise: 1 / (mean |x1 - x2| / mean |z1 - z2| + eps)."""
    half = x_fake.shape[0] // 2
    ratio = (x_fake[:half] - x_fake[half:2 * half]).abs().mean() / (z[:half] - z[half:2 * half]).abs().mean()
    return 1.0 / (ratio + eps)
