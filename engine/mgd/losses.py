"""The losses of MGD, exactly as METHOD.md states them.

All KL divergences are averaged over the batch ("batchmean") and scaled by T^2, the
usual correction that keeps gradient magnitudes comparable across temperatures.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def soft_kl(student_logits: torch.Tensor, target_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(target / T) || softmax(student / T))``, batch mean; target detached."""
    t = float(temperature)
    log_p_student = F.log_softmax(student_logits / t, dim=1)
    p_target = F.softmax(target_logits.detach() / t, dim=1)
    return F.kl_div(log_p_student, p_target, reduction="batchmean") * (t * t)


def head_loss(decoded_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
              temperature: float) -> torch.Tensor:
    """Stage 2 loss of one granularity head: ``T_g^2 KL(z_T/T_g || r_g/T_g) + CE(r_g, y)``."""
    return soft_kl(decoded_logits, teacher_logits, temperature) + F.cross_entropy(decoded_logits, labels)


def code_losses(student_codes: Sequence[torch.Tensor], teacher_codes: Sequence[torch.Tensor],
                temperatures: Sequence[float]) -> list[torch.Tensor]:
    """Each granularity's stage 3 code term ``T_g^2 KL(e_T,g/T_g || e_S,g/T_g)``."""
    if not (len(student_codes) == len(teacher_codes) == len(temperatures)):
        raise ValueError(
            f"code_loss needs one student code, teacher code and temperature per head; got "
            f"{len(student_codes)}, {len(teacher_codes)} and {len(temperatures)}")
    return [soft_kl(s, t, temp) for s, t, temp in zip(student_codes, teacher_codes, temperatures)]


def code_loss(student_codes: Sequence[torch.Tensor], teacher_codes: Sequence[torch.Tensor],
              temperatures: Sequence[float]) -> torch.Tensor:
    """Sum over heads of the stage 3 code term."""
    return torch.stack(code_losses(student_codes, teacher_codes, temperatures)).sum()


def stable_target(teacher_logits: torch.Tensor, decoded_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stable excitation target: the mean of the teacher logits and every head's decoded logits."""
    return torch.stack([teacher_logits, *decoded_logits]).mean(dim=0)
