"""The experiment schema: the one source of truth for every setting.

An experiment is a tree of dataclasses. Each field carries its documentation and its
constraints in ``metadata`` (``help``, ``choices``, ``minimum``, ``maximum``, ``widget``),
which the YAML loader, ``--set`` overrides, the validator and the GUI's forms all read.
Adding a field here makes it appear everywhere.

This module imports no torch: the GUI loads it at start-up.

Defaults follow ``METHOD.md`` (the authors' code for CIFAR-100). ``None`` in a field
documented as "auto" means "the method's default for this choice"; :func:`resolve`
fills those in, and the run folder's ``config.yaml`` holds the resolved values.
"""

from __future__ import annotations

import copy
import dataclasses
import errno
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from engine.config_yaml import read_config_text, short_repr, yaml_load, yaml_problem
from engine.errors import ConfigError, InputError

# ----------------------------------------------------------------------------- helpers


def setting(default: Any = dataclasses.MISSING, *, help: str, factory: Any = None, **meta: Any) -> Any:
    """A dataclass field with its documentation and constraints.

    ``meta`` keys: ``choices`` (a tuple, or the name of a dynamic list: "models",
    "distillers", "datasets"), ``minimum``, ``maximum`` (numbers, inclusive; for lists,
    they bound every item), ``above`` (an exclusive minimum), ``widget`` ("dir", "file",
    "text"), ``label``.
    """
    metadata = {"help": help, **meta}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


MGD_MODES = ("off", "granularity", "stable")
AUGMENT_CHOICES = ("auto", "none", "crop", "flip", "crop_flip", "resized_crop_flip")
NORMALIZE_CHOICES = ("auto", "dataset", "imagenet")
EXPORT_FORMATS = ("weights", "torchscript", "onnx")
SMALL_LR_STUDENTS = ("MobileNetV2", "ShuffleNetV1", "ShuffleNetV2")  # METHOD.md: lr 0.01
#: the largest weight of the cross-entropy and logit KD terms (1000x the authors' largest, 1)
MAX_LOGIT_WEIGHT = 1000.0
#: the largest magnitude of any number setting that declares no maximum of its own (a
#: baseline's weights and options included): 33x PKT's 30000, the largest the method uses
MAX_NUMBER = 1e6
#: a name becomes part of the run folder's name (after a 16-character date stamp): it must
#: stay well inside a file name's 255 bytes
MAX_NAME_BYTES = 200
#: METHOD.md's milestones of each stage for its epochs: empty milestones scale with the epochs
STAGE_MILESTONES = {"teacher": (240, (60, 120, 180)), "granularity": (60, (30, 45)),
                    "student": (240, (150, 180, 210)), "transfer": (50, (20, 25))}
#: the largest seed: every model's seed (seed + a small per-role offset) must stay a valid
#: 32-bit seed for torch, NumPy and the data pipeline alike
MAX_SEED = 2**31 - 1024


def _dynamic_choices(name: str) -> tuple[str, ...]:
    if name == "models":
        from engine.models import model_names

        return tuple(model_names())
    if name == "distillers":
        from engine.distillers import distiller_names

        return tuple(distiller_names())
    if name == "datasets":
        from engine.data import DATASETS

        return tuple(DATASETS)
    raise KeyError(name)


def choices_of(f: dataclasses.Field) -> tuple | None:
    """The allowed values of a field, resolving dynamic lists (registries)."""
    choices = f.metadata.get("choices")
    if isinstance(choices, str):
        return _dynamic_choices(choices)
    return choices


# ----------------------------------------------------------------------------- schema


@dataclass
class Schedule:
    """SGD with step decay of the learning rate."""

    epochs: int = setting(240, help="Number of passes over the training set.", minimum=0, maximum=100000)
    lr: float | None = setting(
        0.05, help="Initial learning rate of SGD (empty: the method's default for this stage and model).",
        minimum=0.0, maximum=10.0,
    )
    momentum: float = setting(0.9, help="SGD momentum.", minimum=0.0, maximum=0.9999)
    weight_decay: float = setting(5e-4, help="L2 weight decay of SGD.", minimum=0.0, maximum=1.0)
    milestones: list[int] | None = setting(
        None, help="Epochs after which the learning rate is multiplied by gamma, each below the number of epochs "
                   "(empty: the stage's own milestones, scaled with its epochs).", minimum=1,
    )
    gamma: float = setting(0.1, help="Factor applied to the learning rate at each milestone.", minimum=0.0, maximum=1.0)


@dataclass
class DataConfig:
    dataset: str = setting("demo", help="Data set: the bundled demo digits, CIFAR-10/100 or an image folder.", choices="datasets")
    root: str | None = setting(
        None, help="Folder holding the data set (CIFAR: torchvision's format; image folder: train/ and test/ of class folders).",
        widget="dir",
    )
    download: bool = setting(False, help="Download CIFAR into root with torchvision when it is missing (needs internet).")
    image_size: int | None = setting(None, help="Side in pixels of the images the models see, for image folders "
                                                "(empty: 32; 224 for ImageNet-pretrained models).", minimum=4, maximum=1024)
    test_fraction: float = setting(0.2, help="Share of an image folder without train/test split held out for testing.", minimum=0.01, maximum=0.9)
    augment: str = setting(
        "auto", help="Training augmentation. crop: random crop with zero padding; flip: horizontal flip; "
                     "resized_crop_flip: random resized crop (8-100% of the area, aspect 3/4-4/3) and flip, the "
                     "images loaded at image_size / 0.875 and centre-cropped for testing (the ImageNet recipe). "
                     "auto: resized_crop_flip for image folders of image_size 64 or more, else crop (plus flip "
                     "for natural images).", choices=AUGMENT_CHOICES)
    normalize: str = setting(
        "auto", help="Input normalisation: dataset (the data set's own mean and std), imagenet (ImageNet's, which "
                     "the libraries' pretrained weights expect); auto: imagenet when the teacher or the student "
                     "starts from pretrained weights or a weights file, else dataset.", choices=NORMALIZE_CHOICES)
    in_memory: str = setting(
        "auto", help="Hold the data set in memory (fast, augmented on the device) or stream it from disk with "
                     "worker processes; auto streams image folders too large for memory.",
        choices=("auto", "on", "off"))
    workers: int = setting(4, help="Worker processes that decode images when streaming from disk.", minimum=0, maximum=64)
    batch_size: int = setting(64, help="Training batch size of every stage.", minimum=1, maximum=65536)
    eval_batch_size: int = setting(256, help="Batch size for test evaluation.", minimum=1, maximum=65536)


MODEL_HELP = (" A CIFAR zoo model, any torchvision classification model (torchvision:resnet50) or any timm "
              "model (timm:mobilenetv3_small_100).")
PRETRAINED_HELP = ("Start from the library's pretrained weights (torchvision: and timm: models), taken from its "
                   "cache or downloaded into it when the machine is online.")
WEIGHTS_HELP = ("Weights file to start from (.pth or .safetensors: a state dict of this model, e.g. the library's "
                "pretrained weights downloaded by hand); a classifier for another number of classes is replaced.")


@dataclass
class TeacherConfig:
    arch: str = setting("resnet32x4", help="Teacher architecture." + MODEL_HELP, choices="models")
    pretrained: bool = setting(False, help=PRETRAINED_HELP + " The teacher stage then fine-tunes it on the data.")
    weights: str | None = setting(None, help=WEIGHTS_HELP + " The teacher stage then fine-tunes it on the data.",
                                  widget="file")
    checkpoint: str | None = setting(
        None, help="Trained teacher to load instead of training one (RepDistiller-style state dicts load directly).",
        widget="file",
    )
    backbone_lr_scale: float | None = setting(
        None, help="Factor on the learning rate of the teacher's backbone (all but its classifier) while it trains "
                   "(empty: 0.1 when it starts from pretrained weights or a weights file, else 1).",
        minimum=0.0, maximum=10.0)
    schedule: Schedule = setting(
        help="Teacher training schedule (ignored when a checkpoint is loaded; learning rate empty: 0.05, or 0.01 "
             "when fine-tuning pretrained weights; milestones empty: 60/120/180 of 240 epochs, scaled with the epochs).",
        factory=lambda: Schedule(epochs=240, lr=None),
    )
    # The authors' train_teacher.py (after RepDistiller's) saves the best-accuracy epoch and the
    # student scripts load that file: the student learns from the teacher's best epoch.
    keep: str = setting(
        "best", help="Which weights of a trained teacher the student learns from: best (the epoch with the best "
                     "test accuracy, as the authors) or last (the final epoch).", choices=("best", "last"))

    @property
    def starts_pretrained(self) -> bool:
        """Whether the teacher to train starts from pretrained weights or a weights file."""
        return bool(self.pretrained or self.weights) and not self.checkpoint


@dataclass
class HeadConfig:
    """One granularity: a code of width ``dim`` compared at softmax temperature ``temperature``."""

    dim: int = setting(64, help="Width of the granularity code (narrow = high pressure).", minimum=1, maximum=65536)
    temperature: float = setting(2.0, help="Softmax temperature of this granularity.", minimum=0.01, maximum=1000.0)


@dataclass
class GranularityConfig:
    mode: str = setting(
        "stable", help="MGD mode: off (plain baseline), granularity (code losses) or stable (codes plus stable excitation target).",
        choices=MGD_MODES,
    )
    heads: list[HeadConfig] = setting(
        help="Granularity heads, each a code width and a temperature (the paper: (64, 2) and (256, 8)).",
        factory=lambda: [HeadConfig(64, 2.0), HeadConfig(256, 8.0)],
    )
    schedule: Schedule = setting(
        help="Schedule of the self-analysis stage (the teacher's heads; milestones empty: 30/45 of 60 epochs, "
             "scaled with the epochs).",
        factory=lambda: Schedule(epochs=60, lr=0.01),
    )
    checkpoint: str | None = setting(
        None, help="The teacher's trained granularity heads to load instead of the self-analysis stage (a run "
                   "folder's checkpoints/heads.pt, trained on the same teacher; a comparison reuses them this way).",
        widget="file")


@dataclass
class StudentConfig:
    arch: str = setting("resnet8x4", help="Student architecture." + MODEL_HELP, choices="models")
    pretrained: bool = setting(False, help=PRETRAINED_HELP)
    weights: str | None = setting(None, help=WEIGHTS_HELP, widget="file")
    schedule: Schedule = setting(
        help="Student schedule (learning rate empty: 0.05, or 0.01 for MobileNetV2 and ShuffleNet; milestones "
             "empty: 150/180/210 of 240 epochs, scaled with the epochs).",
        factory=lambda: Schedule(epochs=240, lr=None),
    )


@dataclass
class OnlineConfig:
    enabled: bool = setting(
        False, help="Online MGD: train peer students together from scratch, no teacher (mutual learning with granularity codes).")
    peers: list[str] = setting(
        help="Peer architectures (empty: two copies of the student architecture).", factory=list, choices="models")


@dataclass
class DistillerConfig:
    name: str = setting("kd", help="Baseline distiller that MGD is added to.", choices="distillers")
    temperature: float = setting(4.0, help="Temperature T of the logit KD term.", minimum=0.01, maximum=1000.0)
    # Bounds: the authors' weights (METHOD.md) are at most 1 for w_ce and w_div and up to 30000 for
    # w_kd (PKT); far larger weights only overflow the loss after the teacher has trained.
    w_ce: float | None = setting(None, help="Weight of the cross-entropy with the labels (empty: the baseline's default).",
                                 minimum=0.0, maximum=MAX_LOGIT_WEIGHT)
    w_div: float | None = setting(None, help="Weight of the logit KD term (empty: the baseline's default).", minimum=0.0,
                                  maximum=MAX_LOGIT_WEIGHT)
    w_kd: float | None = setting(None, help="Weight of the baseline's own term (empty: the baseline's default).",
                                 minimum=0.0, maximum=MAX_NUMBER)
    options: dict = setting(help="The baseline's own settings, each declared by the baseline with its type, default, "
                                 "help and bounds (mgd-train --plan lists them); empty: its defaults.",
                            factory=dict, widget="options")


@dataclass
class EvaluationConfig:
    noise_levels: list[float] = setting(
        help="Standard deviations of the Gaussian noise added to the normalised test input for the robustness curve.",
        factory=lambda: [0.0, 0.05, 0.1, 0.2, 0.3, 0.5], minimum=0.0, maximum=100.0,
    )
    noise_seed: int = setting(0, help="Seed of the noise, fixed so that curves compare across runs.", minimum=0,
                              maximum=MAX_SEED)


@dataclass
class TransferConfig:
    enabled: bool = setting(False, help="After distillation, measure fine-tuning ability: train only a new linear classifier on a second data set.")
    data: DataConfig = setting(help="The second data set (its channel count must match the first).", factory=DataConfig)
    schedule: Schedule = setting(
        help="Linear-probe schedule (the authors: 50 epochs, lr 0.02, decay at 20 and 25; milestones empty: 20/25 "
             "of 50 epochs, scaled with the epochs).",
        factory=lambda: Schedule(epochs=50, lr=0.02),
    )
    adapt_batchnorm: bool = setting(
        True, help="Keep the frozen backbone in training mode so its batch-norm statistics adapt to the new data (as the authors' code does).")


@dataclass
class PairConfig:
    """A teacher and the student distilled from it."""

    teacher: str = setting("resnet32x4", help="Teacher architecture.", choices="models")
    student: str = setting("resnet8x4", help="Student architecture.", choices="models")


@dataclass
class ComparisonConfig:
    pairs: list[PairConfig] = setting(
        help="Teacher/student pairs to compare (empty: the experiment's own teacher and student).", factory=list)
    teachers_dir: str | None = setting(
        None, help="RepDistiller's folder of published CIFAR-100 teachers (its save/models): each pair's teacher "
                   "is loaded from <folder>/<teacher>_vanilla/ckpt_epoch_240.pth instead of being trained.",
        widget="dir")
    baselines: list[str] = setting(
        help="Baselines to compare, each run with every MGD mode below (empty: one ordinary run).",
        factory=list, choices="distillers")
    modes: list[str] = setting(help="MGD modes each baseline is run with.",
                               factory=lambda: ["off", "granularity", "stable"], choices=MGD_MODES)
    seeds: list[int] = setting(help="Seeds; with several, the table shows mean and standard deviation.",
                               factory=lambda: [0], minimum=0, maximum=MAX_SEED)
    student_alone: bool = setting(True, help="Also train the student alone (no teacher) at the same budget.")


@dataclass
class ExportConfig:
    enabled: bool = setting(True, help="Export the best student at the end of the run.")
    formats: list[str] = setting(help="Export formats.", factory=lambda: list(EXPORT_FORMATS), choices=EXPORT_FORMATS)
    dir: str | None = setting(None, help="Export folder (empty: export/ in the run folder).", widget="dir")


@dataclass
class SpeedConfig:
    # The authors (and RepDistiller) train in fp32; mixed precision is the user's choice, never a default.
    amp: str = setting(
        "off", help="Mixed precision. off (default): fp32, the authors' numerics, as the paper presets promise. "
                    "bf16: about 1.5-2x faster on recent GPUs, results within a few tenths of a point of fp32 "
                    "(see the README), no loss scaling needed. fp16: as fast, needs a CUDA GPU and a grad scaler "
                    "(applied automatically). auto: bf16 on GPUs that support it, else fp16; fp32 on the CPU.",
        choices=("off", "bf16", "fp16", "auto"))
    channels_last: str = setting(
        "auto", help="Channels-last memory format for convolutions: auto (on for GPUs), on or off.",
        choices=("auto", "on", "off"))
    compile: bool = setting(False, help="torch.compile the models (slow to start; pays off on long GPU runs).")
    sync_batchnorm: bool = setting(
        False, help="With several GPU processes (mgd-train --nproc N): batch-norm statistics over the whole batch "
                    "rather than each process's part of it.")


@dataclass
class ExperimentConfig:
    name: str = setting("experiment", help="Name of the experiment, used in the run folder's name.")
    seed: int = setting(0, help="Random seed: the same config and seed give the same numbers on the CPU.", minimum=0,
                        maximum=MAX_SEED)
    device: str = setting("auto", help="auto (CUDA, then Apple GPU, then CPU), cpu, cuda, cuda:N or mps.")
    data: DataConfig = setting(help="Data set and batches.", factory=DataConfig)
    teacher: TeacherConfig = setting(help="Teacher: train it or load a checkpoint.", factory=TeacherConfig)
    granularity: GranularityConfig = setting(help="Granularity heads and MGD mode.", factory=GranularityConfig)
    student: StudentConfig = setting(help="Student architecture and schedule.", factory=StudentConfig)
    distiller: DistillerConfig = setting(help="Baseline distiller and loss weights.", factory=DistillerConfig)
    online: OnlineConfig = setting(help="Online variant: peers learn from each other instead of a teacher.",
                                   factory=OnlineConfig)
    evaluation: EvaluationConfig = setting(help="Evaluation: noise robustness.", factory=EvaluationConfig)
    transfer: TransferConfig = setting(help="Fine-tuning ability of the distilled student (a linear probe).",
                                       factory=TransferConfig)
    export: ExportConfig = setting(help="Export of the trained student.", factory=ExportConfig)
    speed: SpeedConfig = setting(
        help="Speed options. The defaults keep the authors' numerics (fp32): mixed precision (bf16 or fp16) is "
             "about 1.5-2x faster on recent GPUs and lands within a few tenths of a point, but is not the "
             "paper's setting; channels-last and compile change speed only.", factory=SpeedConfig)
    comparison: ComparisonConfig = setting(help="A comparison table: several baselines with MGD off and on.",
                                           factory=ComparisonConfig)


# ----------------------------------------------------------------------------- conversion


def to_dict(cfg: Any) -> Any:
    """The config as plain YAML-able data, in schema order."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, list):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a mapping",
            type(None): "empty (null)"}.get(tp, str(tp))


def _convert(value: Any, tp: Any, path: str, default: Any = None) -> Any:
    """``value`` as type ``tp``; a mapping for a section fills in ``default`` (the section's own
    default instance), so that what it leaves out keeps the section's defaults."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, path, default)
            except ConfigError:
                continue
        raise ConfigError(path, f"expected {_type_name(tp)}, got {short_repr(value)}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path, base=default if isinstance(default, tp) else None)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, f"expected {_type_name(tp)}, got {short_repr(value)}")
        (item,) = typing.get_args(tp)
        return [_convert(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(path, f"expected true or false, got {short_repr(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d{1,30}\s*", value):  # a whole number written as text
            return int(value)
        raise ConfigError(path, f"expected an integer, got {short_repr(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "5e-4" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(path, f"expected a number, got {short_repr(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(path, f"expected a string, got {short_repr(value)}")
    if tp is dict:
        if isinstance(value, dict):
            return copy.deepcopy(value)
        raise ConfigError(path, f"expected a mapping, got {short_repr(value)}")
    raise ConfigError(path, f"unsupported type {tp}")  # pragma: no cover - schema bug


_HINTS: dict[type, dict[str, Any]] = {}


def field_types(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def from_dict(cls: type, data: Any, path: str = "", base: Any = None) -> Any:
    """Build a dataclass from plain data; unknown keys and wrong types raise ConfigError.

    The one way plain data becomes settings (a YAML file, ``--set``, the studio's form, a
    run folder's config): every setting the data leaves out keeps its default, and for a
    section that is the section's own default (``base``, or the enclosing field's default:
    ``granularity: {schedule: {epochs: 60}}`` keeps the heads' lr 0.01, not the generic
    schedule's 0.05)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path or "config", f"expected a mapping, got {short_repr(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = field_types(cls)
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0] if isinstance(unknown[0], str) and unknown[0].isprintable() else short_repr(unknown[0])
        where = f"{path}.{key}" if path else key
        raise ConfigError(where, f"unknown setting; allowed here: {', '.join(fields) or 'none'}")
    kwargs = {}
    for name, value in data.items():
        default = getattr(base, name) if base is not None else _field_default(fields[name])
        kwargs[name] = _convert(value, hints[name], f"{path}.{name}" if path else name, default)
    if base is not None:
        return dataclasses.replace(copy.deepcopy(base), **kwargs)
    return cls(**kwargs)


# ----------------------------------------------------------------------------- YAML


def load_config(source: str | Path | dict) -> ExperimentConfig:
    """Read an experiment from a YAML file (or a dict); raises InputError/ConfigError.

    Settings the file leaves out take their section's defaults (see :func:`from_dict`)."""
    if isinstance(source, dict):
        return from_dict(ExperimentConfig, source)
    path = Path(source)
    try:
        data = yaml_load(read_config_text(path))
    except InputError as exc:
        raise InputError(str(exc) if str(exc).startswith(str(path)) else f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: {yaml_problem(exc)}") from None
    _refuse_empty(data, str(path))
    try:
        return from_dict(ExperimentConfig, data)
    except ConfigError as exc:
        raise ConfigError(exc.field, f"{exc.reason} (in {path})") from None


def _refuse_empty(data: Any, where: str) -> None:
    # an empty file would otherwise start the full 240-epoch default run
    if data is None or data == {}:
        raise InputError(f"{where}: the experiment file holds no settings; start from a preset "
                         "(resources/presets/demo.yaml) or write at least the data, teacher and student")


def loads_config(text: str) -> ExperimentConfig:
    try:
        data = yaml_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"config: {yaml_problem(exc)}") from None
    _refuse_empty(data, "config")
    return from_dict(ExperimentConfig, data)


class _Dumper(yaml.SafeDumper):
    pass


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    # Short lists of scalars read best inline: [150, 180, 210].
    flow = all(isinstance(v, (int, float, str, bool)) or v is None for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def dumps_config(cfg: ExperimentConfig) -> str:
    return yaml.dump(to_dict(cfg), Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False)


def save_config(cfg: ExperimentConfig, path: str | Path) -> None:
    """Write the experiment as YAML, atomically."""
    from engine.runfolder import atomic_write

    atomic_write(path, dumps_config(cfg))


# ----------------------------------------------------------------------------- overrides


def _split_path(dotted: str) -> list[str]:
    return [p for p in dotted.replace("[", ".").replace("]", "").split(".") if p]


def get_value(cfg: Any, dotted: str) -> Any:
    node = cfg
    for part in _split_path(dotted):
        node = node[int(part)] if isinstance(node, list) else getattr(node, part)
    return node


def set_value(cfg: ExperimentConfig, dotted: str, value: Any) -> ExperimentConfig:
    """A copy of ``cfg`` with the field at ``dotted`` (e.g. ``student.schedule.lr`` or
    ``granularity.heads.0.dim``) set to ``value``, type-checked against the schema."""
    data = to_dict(cfg)
    parts = _split_path(dotted)
    if not parts:
        raise ConfigError(dotted, "empty setting name")
    node = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(where, f"no item {part}; the list has {len(node)} items")
            key: Any = int(part)
        elif isinstance(node, dict):
            key = part
            if key not in node and not last:
                raise ConfigError(where, f"unknown setting; allowed here: {', '.join(node)}")
        else:
            raise ConfigError(where, "this setting has no sub-settings")
        if last:
            node[key] = value
        else:
            node = node[key]
    return from_dict(ExperimentConfig, data)


def apply_override(cfg: ExperimentConfig, assignment: str) -> ExperimentConfig:
    """Apply one ``dotted.key=value`` override; the value is read as YAML (``[1, 2]``, ``null``, ``0.1``)."""
    if "=" not in assignment:
        raise InputError(f"--set {assignment!r}: expected dotted.key=value")
    key, raw = assignment.split("=", 1)
    try:
        value = yaml_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return set_value(cfg, key.strip(), value)


# ----------------------------------------------------------------------------- validation


def iter_fields(cfg: Any, prefix: str = ""):
    """Yield ``(dotted_path, field, value)`` for every leaf setting (lists of dataclasses expanded)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        path = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(value):
            yield from iter_fields(value, path)
        elif isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
            for i, item in enumerate(value):
                yield from iter_fields(item, f"{path}.{i}")
        else:
            yield path, f, value


def _check_field(path: str, f: dataclasses.Field, value: Any) -> str | None:
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    if f.metadata.get("choices") == "models":  # the zoo, or any torchvision:/timm: classification model
        from engine.models.sources import name_problem

        for item in items:
            problem = name_problem(item)
            if problem:
                return problem
        return None
    choices = choices_of(f)
    if choices is not None:
        for item in items:
            if item not in choices:
                return f"{short_repr(item)} is not allowed; choose one of: {', '.join(map(str, choices))}"
    lo, hi, above = f.metadata.get("minimum"), f.metadata.get("maximum"), f.metadata.get("above")
    # no number setting is unbounded: a weight of 1e30 would pass the plan, then overflow the loss
    hi = MAX_NUMBER if hi is None else hi
    lo = -MAX_NUMBER if lo is None and above is None else lo
    for item in items:
        if isinstance(item, str):
            problem = _text_problem(item, f)
            if problem:
                return problem
        if isinstance(item, (int, float)) and not isinstance(item, bool):
            if item != item or item in (float("inf"), float("-inf")):
                return f"must be a finite number, not {item}"
            if lo is not None and item < lo:
                return f"{item} is below the minimum {lo}"
            if above is not None and item <= above:
                return f"must be greater than {above}, got {item}"
            if hi is not None and item > hi:
                return f"{item} is above the maximum {hi}"
    return None


def _text_problem(text: str, f: dataclasses.Field) -> str | None:
    """What is wrong with a text setting: text that cannot be written to the run folder's
    files, a path the file system cannot hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return f"{short_repr(text)} is not valid text (it holds a lone surrogate)"
    if f.metadata.get("widget") in ("dir", "file"):
        if "\0" in text:
            return f"{short_repr(text)} is not a path (it holds a NUL byte)"
        try:
            os.stat(os.path.expanduser(text))
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                return f"the path ({len(text):,} characters) is longer than the file system allows"
            if exc.errno == errno.ELOOP:
                return f"{short_repr(text)} is a loop of symbolic links"
        except ValueError:
            return f"{short_repr(text)} is not a path"
    return None


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name an experiment (it becomes part of its run folder's name), or None."""
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > MAX_NAME_BYTES:
        return (f"{size} bytes long; a name is at most {MAX_NAME_BYTES} bytes (it becomes part of the run "
                "folder's name)")
    bad = next((c for c in name if c in "/\\" or ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        return f"must not hold {bad!r} (a path separator or control character): it becomes part of the run folder's name"
    return None


def build_section(cls: type, data: Any, path: str) -> Any:
    """A validated instance of the settings dataclass ``cls`` from plain data: unknown keys,
    wrong types and out-of-range values raise a ConfigError naming ``path.<key>``.
    (Used for the config's own sections and for each distiller's declared options.)"""
    section = from_dict(cls, data, path)
    for sub, f, value in iter_fields(section, path):
        problem = _check_field(sub, f, value)
        if problem:
            raise ConfigError(sub, problem)
    return section


def validation_errors(cfg: ExperimentConfig) -> list[ConfigError]:
    """Every problem of the config, each naming its field; empty when the config is valid."""
    errors: list[ConfigError] = []
    for path, f, value in iter_fields(cfg):
        problem = _check_field(path, f, value)
        if problem:
            errors.append(ConfigError(path, problem))

    problem = name_problem(cfg.name)
    if problem:
        errors.append(ConfigError("name", problem))
    for stage in STAGE_MILESTONES:
        sched: Schedule = getattr(cfg, stage).schedule
        ms = sched.milestones
        if ms is None:
            continue
        if ms != sorted(ms) or len(set(ms)) != len(ms):
            errors.append(ConfigError(f"{stage}.schedule.milestones", f"must be increasing, got {ms}"))
        elif sched.epochs >= 1 and ms and ms[-1] >= sched.epochs:
            errors.append(ConfigError(f"{stage}.schedule.milestones", f"{ms[-1]} is not below the {sched.epochs} "
                                      "epochs: a milestone at or after the last epoch never decays the learning "
                                      "rate (leave milestones empty to scale the stage's own with its epochs)"))
    errors += _comparison_errors(cfg.comparison)
    if not cfg.granularity.heads and cfg.granularity.mode != "off":
        errors.append(ConfigError("granularity.heads", f"mode {cfg.granularity.mode!r} needs at least one head"))
    for prefix, data in (("data", cfg.data), ("transfer.data", cfg.transfer.data)):
        if (prefix == "data" or cfg.transfer.enabled) and data.dataset in ("cifar10", "cifar100", "imagefolder") \
                and not data.root:
            errors.append(ConfigError(f"{prefix}.root", f"the {data.dataset} data set needs a folder"))
    if cfg.online.enabled:
        if cfg.granularity.mode == "stable":
            errors.append(ConfigError("granularity.mode", "'stable' needs a teacher's trained heads; "
                                      "online MGD supports 'off' (plain mutual learning) and 'granularity'"))
        if len(cfg.online.peers) == 1:
            errors.append(ConfigError("online.peers", "online MGD needs at least two peers (or none: two students)"))
    elif cfg.teacher.checkpoint is None and cfg.teacher.schedule.epochs < 1:
        errors.append(ConfigError("teacher.schedule.epochs", "must be at least 1 when no teacher checkpoint is given"))
    errors += _model_source_errors(cfg)
    dev = cfg.device
    if not (dev in ("auto", "cpu", "cuda", "mps") or (dev.startswith("cuda:") and dev[5:].isdigit())):
        errors.append(ConfigError("device", f"{dev!r} is not allowed; choose auto, cpu, cuda, cuda:N or mps"))
    return errors


def _comparison_errors(c: ComparisonConfig) -> list[ConfigError]:
    """A comparison (``baselines`` given) whose lists make no run, or the same run twice."""
    if not c.baselines:
        return []
    errors: list[ConfigError] = []
    for key in ("seeds", "modes", "baselines"):
        values = getattr(c, key)
        if not values:
            errors.append(ConfigError(f"comparison.{key}", "is empty, so the comparison would run nothing; "
                                      "list at least one"))
        elif len(set(values)) != len(values):
            errors.append(ConfigError(f"comparison.{key}", f"lists a value twice ({values}): each run once"))
    pairs = [(p.teacher, p.student) for p in c.pairs]
    if len(set(pairs)) != len(pairs):
        errors.append(ConfigError("comparison.pairs", "lists a pair twice: each pair once"))
    if not c.student_alone and all(b == "none" for b in c.baselines):
        errors.append(ConfigError("comparison.baselines", "only 'none' (the student alone, which student_alone "
                                  "is off for): the comparison would run nothing"))
    return errors


def _is_file(path: str) -> bool:
    try:
        return Path(path).expanduser().is_file()
    except (OSError, ValueError):  # a path the file system cannot hold: its field's check names it
        return False


def _model_source_errors(cfg: ExperimentConfig) -> list[ConfigError]:
    """Where each model's starting weights come from, and baselines a library model cannot serve."""
    from engine.models.sources import is_external

    errors: list[ConfigError] = []
    for role in ("teacher", "student"):
        section = getattr(cfg, role)
        if section.pretrained and section.weights:
            errors.append(ConfigError(f"{role}.weights", "give pretrained or a weights file, not both"))
        if section.pretrained and not is_external(section.arch):
            errors.append(ConfigError(f"{role}.pretrained", f"the CIFAR zoo model {section.arch} has no pretrained "
                                      "weights; use a torchvision:NAME or timm:NAME model, or a weights file"))
        if section.weights and not _is_file(section.weights):
            errors.append(ConfigError(f"{role}.weights", f"no such file: {section.weights}"))
    if cfg.teacher.checkpoint and (cfg.teacher.pretrained or cfg.teacher.weights):
        errors.append(ConfigError("teacher.checkpoint", "a checkpoint is a trained teacher, used as it is; "
                                  "pretrained and weights start a teacher to fine-tune: give one or the other"))
    archs = [cfg.student.arch] + (list(cfg.online.peers) if cfg.online.enabled else [cfg.teacher.arch])
    library = [a for a in archs if isinstance(a, str) and is_external(a)]
    if library:
        from engine.distillers import DISTILLERS, distiller_class

        if cfg.distiller.name in DISTILLERS and getattr(distiller_class(cfg.distiller.name), "needs_preact", False):
            errors.append(ConfigError("distiller.name", f"{cfg.distiller.name} needs pre-activation features, which "
                                      f"library models such as {library[0]} do not give; choose another baseline"))
    return errors


def validate(cfg: ExperimentConfig) -> ExperimentConfig:
    """Raise the first ConfigError of the config, or return it unchanged."""
    errors = validation_errors(cfg)
    if errors:
        raise errors[0]
    return cfg


# ----------------------------------------------------------------------------- resolution


def scaled_milestones(stage: str, epochs: int) -> list[int]:
    """The stage's METHOD.md milestones scaled to ``epochs`` (rounded; those that would fall
    outside 1..epochs-1 or repeat dropped): the student's 150/180/210 of 240 epochs are
    epochs x (0.625, 0.75, 0.875)."""
    ref_epochs, ref = STAGE_MILESTONES[stage]
    out: list[int] = []
    for m in ref:
        at = (2 * m * epochs + ref_epochs) // (2 * ref_epochs)  # round(m * epochs / ref_epochs), halves up
        if 1 <= at < epochs and at not in out:
            out.append(at)
    return out


def resolve_valid(cfg: ExperimentConfig) -> ExperimentConfig:
    """The config a run uses: ``cfg`` validated, resolved and the result validated again
    (InputError/ConfigError naming the field otherwise)."""
    return validate(resolve(validate(cfg)))


def resolve(cfg: ExperimentConfig) -> ExperimentConfig:
    """A copy with every "auto" (None) setting replaced by the method's default."""
    from engine.distillers import distiller_class

    out = copy.deepcopy(cfg)
    for stage in STAGE_MILESTONES:
        sched = getattr(out, stage).schedule
        if sched.milestones is None:
            sched.milestones = scaled_milestones(stage, sched.epochs)
    if out.student.schedule.lr is None:
        out.student.schedule.lr = 0.01 if out.student.arch in SMALL_LR_STUDENTS else 0.05
    fine_tune = out.teacher.starts_pretrained
    for stage, lr in (("teacher", 0.01 if fine_tune else 0.05), ("granularity", 0.01)):
        if getattr(out, stage).schedule.lr is None:
            getattr(out, stage).schedule.lr = lr
    if out.teacher.backbone_lr_scale is None:
        out.teacher.backbone_lr_scale = 0.1 if fine_tune else 1.0
    teacher_used = not out.online.enabled
    pretrained = (teacher_used and out.teacher.starts_pretrained) or bool(out.student.pretrained or out.student.weights)
    for data in (out.data, out.transfer.data):
        if data.normalize == "auto":
            data.normalize = "imagenet" if pretrained else "dataset"
    cls = distiller_class(out.distiller.name)
    # every option, defaults filled in (for the pair, where the baseline tunes them per pair)
    out.distiller.options = cls.resolve_options(out.distiller.options, out.teacher.arch, out.student.arch)
    defaults = cls.default_weights
    for key, value in zip(("w_ce", "w_div", "w_kd"), defaults):
        if getattr(out.distiller, key) is None:
            setattr(out.distiller, key, float(value))
    if out.online.enabled and not out.online.peers:
        out.online.peers = [out.student.arch, out.student.arch]
    for data in (out.data, out.transfer.data):
        if data.image_size is None and data.dataset == "imagefolder":
            data.image_size = 32
    return out
