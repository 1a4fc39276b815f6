"""Multi-granularity distillation (MGD), usable on its own in any training loop.

::

    from engine.mgd import GranularityHeads, head_loss, code_loss, stable_target

    heads = GranularityHeads(feature_dim=256, num_classes=100)     # paper: (64, 2), (256, 8)
    codes, decoded = heads(teacher_penultimate_features)
    loss = sum(head_loss(r, teacher_logits, labels, h.temperature) for r, h in zip(decoded, heads.heads))
"""

from engine.mgd.heads import GranularityHead, GranularityHeads, head_names
from engine.mgd.losses import code_loss, code_losses, head_loss, soft_kl, stable_target

__all__ = ["GranularityHead", "GranularityHeads", "head_names", "head_loss", "code_loss", "code_losses",
           "stable_target", "soft_kl"]
