"""Contrastive representation distillation (Tian et al., ICLR 2020), as in RepDistiller.

The pooled features of both networks go through their own linear embedding (``feat_dim``,
128) and are L2-normalised: ``v_s``, ``v_t``. A memory bank keeps, for every training
sample ``i``, one student embedding ``M_s[i]`` and one teacher embedding ``M_t[i]`` (buffers:
saved in checkpoints, moved with the module, never optimised), initialised uniformly in
``[-b, b]`` with ``b = 1 / sqrt(feat_dim / 3)``. For a batch with sample indices ``i`` and
``K`` negative indices ``j_1..j_K`` per sample (column 0 of the drawn indices is ``i``
itself, RepDistiller's "exact" positive):

    P_s[n, k] = exp(<M_t[idx_k], v_s[n]> / T) / Z_s      (student anchor, teacher memory)
    P_t[n, k] = exp(<M_s[idx_k], v_t[n]> / T) / Z_t      (teacher anchor, student memory)

``Z_s``, ``Z_t`` are set once, on the first batch, to ``mean(exp(...)) * N`` (N = training
set size) and kept in a buffer. With the noise probability ``Pn = 1/N`` each direction's
NCE loss is

    -1/B * sum_n [ log(P[n,0] / (P[n,0] + K*Pn + eps))
                   + sum_{k>=1} log(K*Pn / (P[n,k] + K*Pn + eps)) ],    eps = 1e-7,

and the term is the sum of both directions. After scoring, the bank rows of the batch are
updated with momentum ``nce_m``: ``M[i] <- normalise(nce_m * M[i] + (1 - nce_m) * v[i])``.

Negatives (RepDistiller's ``CIFAR100InstanceSample``, mode "exact", dataset/cifar100.py): for an
anchor of class ``y`` the ``nce_k`` negatives are drawn from the training samples of the *other*
classes, without replacement, or with replacement when ``nce_k`` exceeds their number (a small
training set: RepDistiller's own fallback, ``replace = k > len(cls_negative[target])``). They are
drawn on the device, in this module, from the class of every training sample
(``DistillerContext.train_labels``); without those labels (a caller that has none), from all
samples other than the anchor. A training set of fewer than 2 samples is refused. When
``B * (K + 1)`` exceeds ``N`` the scores are computed as one product with the whole bank and
gathered (the same numbers, far less memory traffic than gathering ``B * (K + 1)`` bank rows).
"""

from __future__ import annotations

from dataclasses import dataclass

import math

import torch
from torch import nn

from engine.config import setting
from engine.distillers import register_distiller
from engine.distillers._feature_adapt import FIELD
from engine.distillers.base import Distiller
from engine.errors import ConfigError

NCE_EPS = 1e-7


class Embed(nn.Module):
    """Linear projection followed by L2 normalisation (RepDistiller's ``Embed``)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x.flatten(1))
        return x / x.pow(2).sum(1, keepdim=True).sqrt()


def nce_loss(p: torch.Tensor, n_data: int) -> torch.Tensor:
    """RepDistiller's ``ContrastLoss`` (Eq. 18 of the CRD paper) on ``B x (K+1)`` probabilities."""
    m = p.shape[1] - 1
    noise = m / float(n_data)
    pos = p[:, 0]
    neg = p[:, 1:]
    log_d1 = torch.log(pos / (pos + noise + NCE_EPS))
    log_d0 = torch.log(noise / (neg + noise + NCE_EPS))
    return -(log_d1.sum() + log_d0.sum()) / p.shape[0]


@dataclass
class CRDOptions:
    feat_dim: int = setting(128, help="Width of the embeddings compared by the contrastive loss.", minimum=1,
                            maximum=65536)
    nce_k: int = setting(16384, help="Negatives drawn per sample from the memory bank, from the other classes "
                                     "(with replacement when they are fewer, as RepDistiller).",
                         minimum=1, maximum=10_000_000)
    nce_t: float = setting(0.07, help="Temperature of the contrastive scores.", above=0.0, maximum=100.0)
    nce_m: float = setting(0.5, help="Momentum of the memory bank's update.", minimum=0.0, maximum=1.0)


@register_distiller("crd")
class CRD(Distiller):
    """CRD (Tian et al. 2020): contrastive loss between embedded pooled features, 16384 negatives from a momentum memory bank."""

    # METHOD.md: (w_ce, w_div, w_kd) = (1, 1, 0.8)
    default_weights = (1.0, 1.0, 0.8)
    Options = CRDOptions

    #: None: choose by size; True/False: force the whole-bank product / the row gather (tests)
    dense_scores: bool | None = None

    def __init__(self, context):
        super().__init__(context)
        feat_dim, nce_k = self.opts.feat_dim, self.opts.nce_k
        self.nce_t, self.nce_m = self.opts.nce_t, self.opts.nce_m
        n_data = int(context.train_size)
        if n_data < 2:
            raise ConfigError(FIELD, f"CRD needs at least 2 training samples for its negatives, got {n_data}")
        s_dim, t_dim = (math.prod(int(d) for d in shapes[-1])
                        for shapes in (context.student_shapes, context.teacher_shapes))
        self.n_data = n_data
        self.num_negatives = nce_k
        self.register_buffer("labels", None, persistent=False)
        if context.train_labels is not None:
            labels = torch.as_tensor(context.train_labels).long().flatten().cpu()
            if labels.numel() != n_data:
                raise ConfigError(FIELD, f"CRD got {labels.numel()} training labels for {n_data} samples")
            counts = torch.bincount(labels, minlength=int(labels.max()) + 1)
            if int(counts.max()) == n_data:
                raise ConfigError(FIELD, "CRD draws its negatives from other classes, but the training set has one")
            # the samples grouped by class: class c holds positions start[c] .. start[c] + count[c] - 1
            self.register_buffer("labels", labels, persistent=False)
            self.register_buffer("by_class", torch.argsort(labels, stable=True), persistent=False)
            self.register_buffer("class_count", counts, persistent=False)
            self.register_buffer("class_start", torch.cumsum(counts, 0) - counts, persistent=False)
        elif self.num_negatives > n_data - 1:
            self.num_negatives = n_data - 1  # no labels, a small set: every other sample at most
        self.embed_s = Embed(s_dim, feat_dim)
        self.embed_t = Embed(t_dim, feat_dim)
        stdv = 1.0 / math.sqrt(feat_dim / 3)
        self.register_buffer("memory_s", torch.rand(n_data, feat_dim).mul_(2 * stdv).add_(-stdv))
        self.register_buffer("memory_t", torch.rand(n_data, feat_dim).mul_(2 * stdv).add_(-stdv))
        self.register_buffer("z", torch.full((2,), -1.0))  # Z_s, Z_t; negative: not set yet

    # -- negatives --------------------------------------------------------------------
    def sample_negatives(self, indices: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``B x K`` negative indices for the anchors ``indices`` (of classes ``labels``): from the
        other classes, without replacement where there are enough of them (see the module's text)."""
        k, device = self.num_negatives, indices.device
        if self.labels is None:  # no classes known: uniform over the samples other than the anchor
            r = torch.randint(0, self.n_data - 1, (indices.shape[0], k), device=device)
            return r + (r >= indices.view(-1, 1)).long()
        labels = self.labels[indices] if labels is None else labels.long().to(device)
        available = self.n_data - self.class_count[labels]  # negatives of each anchor
        out = torch.empty(indices.shape[0], k, dtype=torch.long, device=device)
        plenty = available >= k
        if bool(plenty.any()):  # without replacement: the k largest of random keys, own class excluded
            rows = labels[plenty]
            keys = torch.rand(rows.shape[0], self.n_data, device=device)
            keys.masked_fill_(self.labels.view(1, -1) == rows.view(-1, 1), -1.0)
            out[plenty] = keys.topk(k, dim=1).indices
        few = ~plenty
        if bool(few.any()):  # with replacement: a position among the other classes' samples
            rows = labels[few]
            r = (torch.rand(rows.shape[0], k, device=device) * available[few].view(-1, 1)).long()
            start, count = self.class_start[rows].view(-1, 1), self.class_count[rows].view(-1, 1)
            out[few] = self.by_class[r + (r >= start).long() * count]
        return out

    def _scores(self, memory: torch.Tensor, v: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``<memory[idx[n, k]], v[n]>`` for every n, k (memory detached)."""
        memory = memory.detach()
        dense = self.dense_scores
        if dense is None:
            dense = idx.numel() > memory.shape[0]
        if dense:
            # a copy: the bank is updated in place after scoring, and backward needs these values
            full = v @ memory.clone().t()  # B x N
            return torch.gather(full, 1, idx)
        rows = memory.index_select(0, idx.reshape(-1)).view(idx.shape[0], idx.shape[1], -1)
        return torch.bmm(rows, v.unsqueeze(2)).squeeze(2)

    # -- the loss ---------------------------------------------------------------------
    def contrast(self, f_s: torch.Tensor, f_t: torch.Tensor, indices: torch.Tensor,
                 negatives: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The CRD term for pooled features ``f_s``, ``f_t`` (updates the memory bank)."""
        v_s, v_t = self.embed_s(f_s), self.embed_t(f_t)
        indices = indices.long().to(v_s.device)
        if negatives is None:
            negatives = self.sample_negatives(indices, labels)
        idx = torch.cat([indices.view(-1, 1), negatives.long().to(v_s.device)], dim=1)
        p_s = torch.exp(self._scores(self.memory_t, v_s, idx) / self.nce_t)
        p_t = torch.exp(self._scores(self.memory_s, v_t, idx) / self.nce_t)
        with torch.no_grad():  # Z set on the first batch, without a device sync
            first = torch.stack([p_s.mean(), p_t.mean()]) * self.n_data
            self.z.copy_(torch.where(self.z < 0, first.to(self.z.dtype), self.z))
        p_s = p_s / self.z[0]
        p_t = p_t / self.z[1]
        loss = nce_loss(p_s, self.n_data) + nce_loss(p_t, self.n_data)
        with torch.no_grad():
            for memory, v in ((self.memory_s, v_s), (self.memory_t, v_t)):
                rows = memory.index_select(0, indices) * self.nce_m + v.detach().to(memory.dtype) * (1 - self.nce_m)
                memory.index_copy_(0, indices, rows / rows.pow(2).sum(1, keepdim=True).sqrt())
        return loss

    def forward(self, student, teacher, labels, indices, negatives=None):
        return {"crd": self.contrast(student.features[-1], teacher.features[-1], indices, negatives, labels)}
