"""The three stages of MGD as tasks for the one training loop (METHOD.md, "Three stages").

* :class:`TeacherTask`: an ordinary classifier trained with cross-entropy.
* :class:`HeadsTask` (self-analysis): granularity heads on the frozen teacher's
  penultimate features, each keeping the weights of its best test accuracy.
* :class:`StudentTask`: the student against the frozen teacher, with the chosen baseline
  and, unless the mode is ``off``, the granularity code terms and the MGD soft target.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.distillers.base import Distiller, ModelOutput
from engine.evaluate import accuracy, confusion_matrices
from engine.mgd import GranularityHeads, code_losses, head_loss, soft_kl, stable_target
from engine.tracker import BestTracker
from engine.trainer import StageTask, StepResult


def _correct(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(dim=1) == y).sum()


class TeacherTask(StageTask):
    name = "teacher"
    role = "teacher"

    def __init__(self, model: nn.Module, test_loader, num_classes: int, keep: str = "last",
                 backbone_lr_scale: float | None = 1.0):
        if keep not in ("best", "last"):
            raise ValueError(f"keep must be 'best' or 'last', got {keep!r}")
        self.model = model
        self.test_loader = test_loader
        self.num_classes = num_classes
        self.keep = keep
        self.tracker = BestTracker({"model": model})
        # fine-tuning a pretrained teacher: its backbone at a fraction of the learning rate
        self.backbone_lr_scale = 1.0 if backbone_lr_scale is None else float(backbone_lr_scale)

    def finish(self) -> None:
        """With ``keep="best"`` the model ends with its best epoch's weights (what the stage's
        checkpoint then holds, and what the student learns from)."""
        if self.keep == "best":
            self.tracker.restore("model")

    def modules(self):
        return {"model": self.model}

    def parameters(self):
        if self.backbone_lr_scale != 1.0 and hasattr(self.model, "parameter_groups"):
            return self.model.parameter_groups(self.backbone_lr_scale)
        return list(self.model.parameters())

    def train_mode(self):
        self.model.train()

    def step(self, x, y, idx):
        logits, _ = self.model(x)
        ce = F.cross_entropy(logits, y)
        return StepResult(ce, {"ce": ce.detach()}, _correct(logits, y))

    def evaluate(self, epoch):
        self.model.eval()
        (conf,) = confusion_matrices(lambda x: self.model(x)[0], self.test_loader, self.num_classes)
        acc = accuracy(conf)
        self.tracker.update("model", acc, epoch)
        return {"test_acc": acc, "confusion": conf.tolist(), "best_acc": self.tracker.best_metric("model")}


class HeadsTask(StageTask):
    """Self-analysis: train every granularity head at once on the frozen teacher (summed losses)."""

    name = "heads"
    role = "teacher_heads"

    def __init__(self, teacher: nn.Module, heads: GranularityHeads, test_loader, num_classes: int):
        self.teacher = teacher
        self.heads = heads
        self.test_loader = test_loader
        self.num_classes = num_classes
        self.keys = [f"head{i + 1}" for i in range(len(heads))]
        self.tracker = BestTracker(dict(zip(self.keys, heads.heads)))  # each head keeps its own best epoch
        self.names = heads.names()

    def modules(self):
        return {"heads": self.heads}

    def parameters(self):
        return list(self.heads.parameters())

    def train_mode(self):
        self.teacher.eval()
        self.heads.train()

    def step(self, x, y, idx):
        with torch.no_grad():
            t_logits, t_feats = self.teacher(x)
        _, decoded = self.heads(t_feats[-1])
        terms = [head_loss(r, t_logits, y, h.temperature) for r, h in zip(decoded, self.heads.heads)]
        total = torch.stack(terms).sum()
        correct = torch.stack([_correct(r, y) for r in decoded]).float().mean()
        losses = {f"head{i + 1}_d{h.dim}": t.detach() for i, (t, h) in enumerate(zip(terms, self.heads.heads))}
        return StepResult(total, losses, correct)

    def evaluate(self, epoch):
        self.teacher.eval()
        self.heads.eval()
        confs = confusion_matrices(lambda x: self.heads(self.teacher(x)[1][-1])[1],
                                   self.test_loader, self.num_classes)
        accs = [accuracy(c) for c in confs]
        for key, acc in zip(self.keys, accs):
            self.tracker.update(key, acc, epoch)
        metrics: dict[str, Any] = {f"head{i + 1}_d{h.dim}": a for i, (a, h) in enumerate(zip(accs, self.heads.heads))}
        metrics["head_accs"] = accs
        return {"test_acc": sum(accs) / len(accs), **metrics}

    def finish(self) -> None:
        """Load each head's best weights (METHOD.md: keep, per head, the best test accuracy)."""
        self.tracker.restore()

    @property
    def best_acc(self) -> list[float | None]:
        return [self.tracker.best_metric(k) for k in self.keys]

    @property
    def best_epoch(self) -> list[int]:
        return [self.tracker.epoch[k] for k in self.keys]


class StudentTask(StageTask):
    """Distillation: ``w_ce CE + w_div T^2 KL(q || z_S) + w_kd baseline + sum_g code terms``."""

    name = "student"
    role = "student"

    def __init__(self, *, student: nn.Module, teacher: nn.Module, distiller: Distiller, mode: str,
                 teacher_heads: GranularityHeads | None, student_heads: GranularityHeads | None,
                 weights: tuple[float, float, float], temperature: float, test_loader, num_classes: int):
        if mode not in ("off", "granularity", "stable"):
            raise ValueError(f"unknown MGD mode {mode!r}")
        if mode != "off" and (teacher_heads is None or student_heads is None):
            raise ValueError(f"MGD mode {mode!r} needs teacher and student granularity heads")
        self.student = student
        self.teacher = teacher
        self.distiller = distiller
        self.mode = mode
        self.teacher_heads = teacher_heads if mode != "off" else None
        self.student_heads = student_heads if mode != "off" else None
        self.w_ce, self.w_div, self.w_kd = weights
        self.temperature = temperature
        self.test_loader = test_loader
        self.num_classes = num_classes
        self.preact = bool(distiller.needs_preact)
        self.uses_teacher = bool(distiller.uses_teacher) or mode != "off"
        self.shared = None  # a TeacherPass of the batch, set by engine.lockstep
        # the student's heads are kept from the student's best epoch too (its codes, for inspection)
        self.tracker = BestTracker({"student": student, **({"student_heads": self.student_heads}
                                                           if self.student_heads is not None else {})})

    def modules(self):
        mods = {"student": self.student, "distiller": self.distiller}
        if self.student_heads is not None:
            mods["student_heads"] = self.student_heads
        return mods

    def parameters(self):
        params = list(self.student.parameters()) + list(self.distiller.parameters())
        if self.student_heads is not None:
            params += self.student_heads.encoder_parameters()  # the decoders play no part in the loss
        return params

    def train_mode(self):
        self.student.train()
        self.distiller.train()
        if self.teacher is not None:
            self.teacher.eval()
        if self.student_heads is not None:
            self.student_heads.train()
            self.teacher_heads.eval()

    def begin_epoch(self, epoch, epochs):
        self.distiller.begin_epoch(epoch, epochs)

    def step(self, x, y, idx):
        s_logits, s_feats = self.student(x, preact=self.preact)
        ce = F.cross_entropy(s_logits, y)
        losses: dict[str, torch.Tensor] = {"ce": ce.detach()}
        total = self.w_ce * ce
        if not self.uses_teacher:  # the student-alone reference
            return StepResult(total, losses, _correct(s_logits, y))

        if self.shared is not None:  # students in lockstep: one teacher pass for all of them
            t_logits, t_feats = self.shared.teacher(self.teacher, self.preact)
            if self.teacher_heads is not None:
                t_codes, t_decoded = self.shared.heads(self.teacher_heads, t_feats, self.preact)
        else:
            with torch.no_grad():
                t_logits, t_feats = self.teacher(x, preact=self.preact)
                if self.teacher_heads is not None:
                    t_codes, t_decoded = self.teacher_heads(t_feats[-1])
        target = stable_target(t_logits, t_decoded) if self.mode == "stable" else t_logits
        kd = soft_kl(s_logits, target, self.temperature)
        total = total + self.w_div * kd
        losses["kd"] = kd.detach()

        # The baseline sees the MGD soft target as the teacher's logits (stable excitation replaces
        # the teacher logits wherever they serve as a target, e.g. in DKD); features stay the teacher's.
        terms = self.distiller(ModelOutput(s_logits, s_feats), ModelOutput(target, t_feats), y, idx)
        for name, term in terms.items():
            total = total + self.w_kd * term
            losses[name] = term.detach()

        if self.student_heads is not None:
            s_codes = self.student_heads.encode(s_feats[-1])
            codes = code_losses(s_codes, t_codes, self.student_heads.temperatures)
            for name, term in zip(self.student_heads.names(), codes):
                total = total + term
                losses[name] = term.detach()
        return StepResult(total, losses, _correct(s_logits, y))

    def evaluate(self, epoch):
        self.student.eval()
        (conf,) = confusion_matrices(lambda x: self.student(x)[0], self.test_loader, self.num_classes)
        acc = accuracy(conf)
        for key in self.tracker.modules:
            self.tracker.update(key, acc, epoch)
        return {"test_acc": acc, "confusion": conf.tolist(), "best_acc": self.tracker.best_metric("student")}


class PretrainTask(StageTask):
    """A baseline's own pre-training stage (AB, FT, FSP in RepDistiller): minimise the sum
    of ``distiller.pretrain_loss`` over the parameters the baseline names."""

    name = "pretrain"
    role = "student"

    def __init__(self, *, student: nn.Module, teacher: nn.Module, distiller: Distiller, test_loader, num_classes: int):
        self.student = student
        self.teacher = teacher
        self.distiller = distiller
        self.test_loader = test_loader
        self.num_classes = num_classes
        self.preact = bool(distiller.needs_preact)

    def modules(self):
        return {"student": self.student, "distiller": self.distiller}

    def parameters(self):
        return self.distiller.pretrain_parameters(self.student)

    def train_mode(self):
        self.student.train()
        self.distiller.train()
        self.teacher.eval()

    def step(self, x, y, idx):
        with torch.no_grad():
            t_logits, t_feats = self.teacher(x, preact=self.preact)
        s_logits, s_feats = self.student(x, preact=self.preact)
        terms = self.distiller.pretrain_loss(ModelOutput(s_logits, s_feats), ModelOutput(t_logits, t_feats))
        total = torch.stack(list(terms.values())).sum()
        return StepResult(total, {k: v.detach() for k, v in terms.items()}, _correct(s_logits, y))

    def evaluate(self, epoch):
        self.student.eval()
        (conf,) = confusion_matrices(lambda x: self.student(x)[0], self.test_loader, self.num_classes)
        return {"test_acc": accuracy(conf)}


class OnlineTask(StageTask):
    """Online MGD (METHOD.md, "Online variant"): peers trained together from scratch.

    Peer k minimises ``CE(z_k, y) + 1/(N-1) sum_{j != k} [KL(z_j || z_k) + sum_g T_g^2 KL(e_j,g/T_g || e_k,g/T_g)]``
    with the other peers' outputs detached; without heads (mode ``off``) this is plain
    deep mutual learning. Each peer keeps its best weights.
    """

    name = "online"
    role = "student"

    def __init__(self, *, peers: list[nn.Module], heads: list[GranularityHeads] | None, test_loader, num_classes: int):
        if len(peers) < 2:
            raise ValueError("online MGD needs at least two peers")
        self.peers = peers
        self.heads = heads
        self.test_loader = test_loader
        self.num_classes = num_classes
        self.keys = [f"peer{i + 1}" for i in range(len(peers))]
        # each peer's heads are kept from that peer's best epoch
        self.tracker = BestTracker({**dict(zip(self.keys, peers)),
                                    **{f"heads{i + 1}": h for i, h in enumerate(heads or [])}})

    def modules(self):
        mods = {f"peer{i + 1}": p for i, p in enumerate(self.peers)}
        if self.heads is not None:
            mods.update({f"heads{i + 1}": h for i, h in enumerate(self.heads)})
        return mods

    def parameters(self):
        params = [p for peer in self.peers for p in peer.parameters()]
        if self.heads is not None:
            params += [p for h in self.heads for p in h.encoder_parameters()]
        return params

    def train_mode(self):
        for m in self.modules().values():
            m.train()

    def step(self, x, y, idx):
        outs = [peer(x) for peer in self.peers]
        logits = [o[0] for o in outs]
        codes = [h.encode(o[1][-1]) for h, o in zip(self.heads, outs)] if self.heads is not None else None
        n = len(self.peers)
        ce_sum = dml_sum = 0
        code_sums: list = [0] * (len(self.heads[0]) if self.heads is not None else 0)
        for k in range(n):
            ce_sum = ce_sum + F.cross_entropy(logits[k], y)
            for j in range(n):
                if j == k:
                    continue
                dml_sum = dml_sum + soft_kl(logits[k], logits[j], 1.0) / (n - 1)
                if codes is not None:
                    parts = code_losses(codes[k], codes[j], self.heads[k].temperatures)
                    code_sums = [c + p / (n - 1) for c, p in zip(code_sums, parts)]
        total = ce_sum + dml_sum + sum(code_sums)
        losses = {"ce": ce_sum.detach() / n, "dml": dml_sum.detach() / n}
        if codes is not None:
            for name, c in zip(self.heads[0].names(), code_sums):
                losses[name] = c.detach() / n
        return StepResult(total, losses, _correct(logits[0], y))

    def evaluate(self, epoch):
        accs, confusion = [], None
        for i, peer in enumerate(self.peers):
            peer.eval()
            (conf,) = confusion_matrices(lambda x, p=peer: p(x)[0], self.test_loader, self.num_classes)
            acc = accuracy(conf)
            accs.append(acc)
            if i == 0:
                confusion = conf.tolist()
            self.tracker.update(self.keys[i], acc, epoch)
            if self.heads is not None:
                self.tracker.update(f"heads{i + 1}", acc, epoch)
        metrics: dict[str, Any] = {f"peer{i + 1}": a for i, a in enumerate(accs)}
        return {"test_acc": accs[0], "confusion": confusion, **metrics}


class TransferTask(TeacherTask):
    """Fine-tuning ability (METHOD.md): a frozen backbone with a new linear classifier, only
    the classifier trained (with cross-entropy, like a teacher). With ``adapt_batchnorm`` the
    backbone stays in training mode, so its batch-norm statistics follow the new data, as in
    the authors' code."""

    name = "transfer"
    role = "student"

    def __init__(self, model: nn.Module, test_loader, num_classes: int, adapt_batchnorm: bool = True):
        super().__init__(model, test_loader, num_classes)
        self.classifier = model.get_classifier()
        for p in model.parameters():
            p.requires_grad_(False)
        for p in self.classifier.parameters():
            p.requires_grad_(True)
        self.adapt_batchnorm = adapt_batchnorm

    def parameters(self):
        return list(self.classifier.parameters())

    def train_mode(self):
        self.model.train(self.adapt_batchnorm)
        self.classifier.train()

    def evaluate(self, epoch):
        result = super().evaluate(epoch)
        result.pop("confusion")
        return result
