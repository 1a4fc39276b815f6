"""torchvision and timm classification models behind the zoo's contract.

:func:`build_external` builds ``torchvision:NAME`` or ``timm:NAME`` (see
:mod:`engine.models.sources`) for a data set's classes and channels, and wraps it in an
:class:`ExternalModel` whose ``forward(x)`` returns ``(logits, [stem, stage1, ..., stageK, pooled])``
like every zoo model. The features come from each library's own feature extraction, with
no per-model code here:

* **timm**: ``forward_intermediates`` (timm's feature API, the one behind
  ``features_only``) gives the maps listed in the model's ``feature_info``; the first is the
  stem, the others the stages. ``forward_head(..., pre_logits=True)`` gives ``pooled``, and
  the logits are the classifier applied to it.
* **torchvision**: ``create_feature_extractor`` (torch.fx) returns the graph nodes chosen
  once per architecture by :func:`torchvision_layout`: the last node of each resolution
  that nothing later bypasses (a stage output, not a node inside a residual block), the
  input of the final linear layer (``pooled``) and that layer's output (the logits).

The classifier (the final ``nn.Linear``) is built for the data set's classes; weights for
another class count leave it out (see :func:`engine.models.checkpoint.load_initial_weights`).
State-dict keys are the library's under ``body.``, so a library state dict loads with the
prefix added. Pre-activation features (only the AB baseline asks for them) do not exist
for these models: ``forward(x, preact=True)`` refuses, and the plan check refuses AB first.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from engine.errors import InputError
from engine.models._base import ZooModel
from engine.models.sources import import_library, name_problem, split_name

#: side of the square probe input used to find the torchvision feature nodes (on the meta
#: device: no memory, no compute); 224 is the size every torchvision model accepts
PROBE_SIZE = 224
PREACT_REASON = ("{arch} is a library model: it gives no pre-activation features, which the "
                 "AB baseline needs; choose another baseline")


class ExternalModel(ZooModel):
    """A library model with the zoo's interface; the library model is ``self.body``."""

    supports_preact = False
    #: key prefix of the library's own state dict inside this module's
    weights_prefix = "body."

    def __init__(self, arch: str, body: nn.Module, classifier_path: str, num_classes: int, stem_channels: int,
                 stage_channels: list[int], feature_dim: int):
        super().__init__()
        self.arch = arch
        self.body = body
        self.classifier_name = f"body.{classifier_path}"
        self.num_classes = int(num_classes)
        self.stem_channels = int(stem_channels)
        self.stage_channels = [int(c) for c in stage_channels]
        self.feature_dim = int(feature_dim)
        self.init_notes: list[str] = []

    def _refuse_preact(self, preact: bool) -> None:
        if preact:
            raise NotImplementedError(PREACT_REASON.format(arch=self.arch))


class TimmModel(ExternalModel):
    """A timm model: features from ``forward_intermediates``, ``pooled`` from ``forward_head``."""

    def forward(self, x: torch.Tensor, preact: bool = False):
        self._refuse_preact(preact)
        final, maps = self.body.forward_intermediates(x, intermediates_only=False)
        pooled = self.body.forward_head(final, pre_logits=True)
        logits = self.get_classifier()(pooled)
        return logits, [*maps, pooled]


class TorchvisionModel(ExternalModel):
    """A torchvision model traced by ``create_feature_extractor``: ``body`` returns the named nodes."""

    def __init__(self, *args, map_nodes: list[str], pooled_node: str, logits_node: str, **kw):
        super().__init__(*args, **kw)
        self.map_nodes = list(map_nodes)
        self.pooled_node = pooled_node
        self.logits_node = logits_node

    def forward(self, x: torch.Tensor, preact: bool = False):
        self._refuse_preact(preact)
        out = self.body(x)
        pooled = out[self.pooled_node]
        if pooled.dim() > 2:
            pooled = pooled.flatten(1)
        return out[self.logits_node], [*(out[k] for k in self.map_nodes), pooled]


# ----------------------------------------------------------------------------- building


def build_external(name: str, num_classes: int, in_channels: int = 3, *, pretrained: bool = False) -> ExternalModel:
    """Build ``torchvision:NAME`` or ``timm:NAME`` for ``num_classes`` classes and ``in_channels``
    input channels, randomly initialised or (``pretrained``) from the library's weights, which
    must be in its cache or downloadable (see :func:`engine.models.sources.pretrained_weights_file`)."""
    problem = name_problem(name)
    if problem:
        raise InputError(problem)
    source, model = split_name(name)
    if source == "timm":
        return _build_timm(name, model, num_classes, in_channels, pretrained)
    return _build_torchvision(name, model, num_classes, in_channels, pretrained)


def _refuse(name: str, reason: str) -> InputError:
    return InputError(f"{name}: {reason}; MGD Studio cannot use it (choose another model)")


def _module_path(root: nn.Module, module: nn.Module) -> str:
    for path, m in root.named_modules():
        if m is module:
            return path
    raise LookupError("module not found")  # pragma: no cover - the module comes from root


def _build_timm(name: str, model: str, num_classes: int, in_channels: int, pretrained: bool) -> TimmModel:
    timm = import_library("timm")
    from timm.models import get_pretrained_cfg

    kwargs: dict = {"num_classes": int(num_classes), "in_chans": int(in_channels)}
    try:
        cfg = get_pretrained_cfg(model)
    except RuntimeError as exc:  # an unknown pretrained tag
        raise InputError(f"{name}: {str(exc).splitlines()[0]}") from None
    if cfg is not None and cfg.fixed_input_size:
        kwargs["dynamic_img_size"] = True  # a transformer made for one size: accept the data set's
    notes = []
    if pretrained:
        from engine.models.sources import pretrained_weights_file

        path = pretrained_weights_file(name)
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(path)})
        source_classes = int((cfg.num_classes if cfg is not None else 0) or 0)
        if source_classes and source_classes != num_classes:
            notes.append(f"{name}: the pretrained classifier ({source_classes} classes) is replaced by a new one "
                         f"for {num_classes} classes")
    try:
        body = timm.create_model(model, **kwargs)
    except TypeError as exc:
        if "dynamic_img_size" not in kwargs:
            raise _refuse(name, f"timm cannot build it ({exc})") from None
        kwargs.pop("dynamic_img_size")
        body = timm.create_model(model, **kwargs)
    except RuntimeError as exc:  # an unknown pretrained tag, a failed weight load
        raise InputError(f"{name}: {str(exc).splitlines()[0]}") from None
    if not hasattr(body, "forward_intermediates") or not getattr(body, "feature_info", None):
        raise _refuse(name, "this timm model has no forward_intermediates/feature_info (timm's feature extraction)")
    classifier = body.get_classifier()
    if not isinstance(classifier, nn.Linear):
        raise _refuse(name, f"its classifier is a {type(classifier).__name__}, not one linear layer")
    channels = [int(f["num_chs"]) for f in body.feature_info]
    wrapped = TimmModel(name, body, _module_path(body, classifier), num_classes, channels[0], channels[1:],
                        classifier.in_features)
    wrapped.init_notes = notes
    return wrapped


@dataclass(frozen=True)
class TorchvisionLayout:
    """Which graph nodes of a torchvision model give the zoo's features (see :func:`torchvision_layout`)."""

    map_nodes: tuple[str, ...]  # stem, then one node per stage
    pooled_node: str  # the input of the final linear layer
    logits_node: str  # the final linear layer
    classifier: str  # module path of the final linear layer
    channels: tuple[int, ...]  # channels of each map node
    feature_dim: int


def _adapt_input_channels(net: nn.Module, in_channels: int) -> None:
    """Rebuild the first convolution (in module order) for ``in_channels`` input channels:
    torchvision builds every model for RGB (timm takes ``in_chans`` itself)."""
    path, conv = next(((p, m) for p, m in net.named_modules() if isinstance(m, nn.Conv2d)), (None, None))
    if conv is None or conv.in_channels == in_channels or conv.groups != 1:
        return
    net.set_submodule(path, nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                                      conv.dilation, 1, conv.bias is not None, conv.padding_mode))


def _build_torchvision(name: str, model: str, num_classes: int, in_channels: int,
                       pretrained: bool) -> TorchvisionModel:
    import torchvision
    from torchvision.models.feature_extraction import create_feature_extractor

    layout = torchvision_layout(model)
    net = torchvision.models.get_model(model, num_classes=int(num_classes))
    _adapt_input_channels(net, int(in_channels))
    net.eval()
    nodes = [*layout.map_nodes, layout.pooled_node, layout.logits_node]
    try:
        body = create_feature_extractor(net, return_nodes=nodes)
    except Exception as exc:  # a node of the eval graph missing from the train graph
        raise _refuse(name, f"torchvision's feature extractor fails on it ({str(exc).splitlines()[0]})") from None
    wrapped = TorchvisionModel(name, body, layout.classifier, num_classes, layout.channels[0],
                               list(layout.channels[1:]), layout.feature_dim, map_nodes=list(layout.map_nodes),
                               pooled_node=layout.pooled_node, logits_node=layout.logits_node)
    if pretrained:
        from engine.models.checkpoint import load_initial_weights
        from engine.models.sources import pretrained_weights_file

        path = pretrained_weights_file(name)
        wrapped.init_notes = load_initial_weights(wrapped, path, name, what="pretrained weights")
    return wrapped


# ----------------------------------------------------------------------------- torchvision layout


def _graph_inputs(value, out: list) -> list:
    if isinstance(value, torch.fx.Node):
        out.append(value)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _graph_inputs(v, out)
    elif isinstance(value, dict):
        for v in value.values():
            _graph_inputs(v, out)
    return out


def _square_side(value) -> int | None:
    """The side of a ``N x C x S x S`` map (None for anything else: vectors, NHWC tensors, sizes)."""
    if isinstance(value, torch.Tensor) and value.dim() == 4 and value.shape[-1] == value.shape[-2]:
        return int(value.shape[-1])
    return None


@functools.lru_cache(maxsize=None)
def torchvision_layout(model: str) -> TorchvisionLayout:
    """Find, once per architecture, the graph nodes that give a torchvision model's features.

    The model is traced with torchvision's ``get_graph_node_names`` / ``create_feature_extractor``
    and run on a ``PROBE_SIZE`` input on the meta device (shapes only). A node is a *cut* when
    no later node reads anything computed before it (no skip connection crosses it): stage
    outputs are cuts, nodes inside residual blocks, squeeze-excitation branches or dense
    blocks are not. Walking the nodes in order, the spatial side of the maps drops at each
    downsampling; for each resolution the feature is the last cut of that resolution before
    the outermost module that holds the next downsampling begins (so the expansion convolution
    that opens the next block is not taken for a stage output). The first such map is the
    stem, the rest the stages, down to the last map before global pooling. ``pooled`` is the
    input of the final ``nn.Linear``, which must give the model's output.
    """
    import torchvision
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    name = f"torchvision:{model}"
    device = "meta"
    try:
        with torch.device("meta"):
            net = torchvision.models.get_model(model, num_classes=10)
    except Exception:  # a constructor that computes with its tensors: build it for real
        net, device = torchvision.models.get_model(model, num_classes=10), "cpu"
    net.eval()
    linears = [p for p, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise _refuse(name, "it has no final linear classifier")
    classifier = linears[-1]
    modules = dict(net.named_modules())
    try:
        _, eval_nodes = get_graph_node_names(net)
        probe = create_feature_extractor(net, return_nodes=eval_nodes)
        probe.eval()
        with torch.no_grad():
            values = probe(torch.zeros(1, 3, PROBE_SIZE, PROBE_SIZE, device=device))
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _refuse(name, f"torchvision's feature extractor cannot trace it ({reason[:160]})") from None

    graph = probe.graph
    output = next(n for n in graph.nodes if n.op == "output")
    key_of = {node: key for key, node in output.args[0].items()}
    order = [n for n in graph.nodes if n.op not in ("placeholder", "get_attr", "output")]
    pos = {n: i for i, n in enumerate(order)}

    calls = [n for n in order if n.op == "call_module" and n.target == classifier]
    if len(calls) != 1 or key_of.get(calls[0]) != eval_nodes[-1]:
        raise _refuse(name, f"its output is not that of its last linear layer {classifier!r}")
    logits_node = calls[0]
    pooled_args = [a for a in _graph_inputs((logits_node.args, logits_node.kwargs), []) if a in pos]
    if not pooled_args or key_of.get(pooled_args[0]) is None:
        raise _refuse(name, "the input of its classifier is not a traced node")
    pooled_node = pooled_args[0]

    # cuts: node i is one when every later node reads only node i or nodes after it
    earliest = []
    for i, n in enumerate(order):
        reads = [pos[a] for a in _graph_inputs((n.args, n.kwargs), []) if a in pos]
        earliest.append(min(reads, default=i))
    cut = [False] * len(order)
    later = len(order)
    for i in range(len(order) - 1, -1, -1):
        cut[i] = later >= i
        later = min(later, earliest[i])

    def side(i: int) -> int | None:
        return _square_side(values.get(key_of.get(order[i])))

    def start_of(prefix: str) -> int:
        return next(i for i, n in enumerate(order) if key_of.get(n, "") == prefix
                    or key_of.get(n, "").startswith(prefix + "."))

    def boundary(drop: int, first: int) -> int:
        """Index where the outermost module holding the downsampling node starts (after ``first``)."""
        parts = key_of.get(order[drop], "").split(".")
        for depth in range(1, len(parts) + 1):  # outermost first
            prefix = ".".join(parts[:depth])
            if prefix in modules and prefix != "":
                start = start_of(prefix)
                if start > first:
                    return start
        return drop

    end = pos[pooled_node]
    levels: list[list[int]] = []  # [side, first index, drop index]
    for i in range(end):
        s = side(i)
        if s is None:
            continue
        if not levels:
            levels.append([s, i, end])
            continue
        current = levels[-1][0]
        if s == current:
            continue
        if (s == 1 or s > current) and not cut[i]:
            continue  # a 1x1 squeeze-excitation branch, an upsampling inside a block
        levels[-1][2] = i
        if s <= 1 or s > current:
            break  # global pooling, or a resolution going up: the feature maps end here
        levels.append([s, i, end])

    chosen: list[int] = []
    for s, first, drop in levels:
        limit = boundary(drop, first) if drop < end else end
        picks = [i for i in range(first, limit) if cut[i] and side(i) == s]
        if not picks:
            picks = [i for i in range(first, drop) if cut[i] and side(i) == s]
        if picks:
            chosen.append(picks[-1])
    if not chosen:
        raise _refuse(name, "no feature maps were found in its graph")
    map_keys = tuple(key_of[order[i]] for i in chosen)
    pooled_value = values[key_of[pooled_node]]
    return TorchvisionLayout(
        map_nodes=map_keys,
        pooled_node=key_of[pooled_node],
        logits_node=key_of[logits_node],
        classifier=classifier,
        channels=tuple(int(values[k].shape[1]) for k in map_keys),
        feature_dim=int(pooled_value.flatten(1).shape[1]),
    )
