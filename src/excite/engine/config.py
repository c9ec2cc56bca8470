"""Training configuration: one flat dataclass, YAML round trip, validated overrides.

Precedence when the CLI builds a config: dataclass defaults < ``--config file.yaml`` <
flags given on the command line. The resolved config is written to every run directory
as ``config.yaml`` and read back by ``--resume`` and ``excite eval``.

:data:`FIELD_DOCS` documents every field in one line (and its choices); ``excite train``
and ``excite compare`` generate one flag per field from it (``--batch-size`` for
``batch_size``), so a new field gets its flag and its ``--help`` line by adding a row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from excite.checks import check_bool, check_number, check_positive_int
from excite.errors import ExciteError, describe_yaml_error, require
from excite.layers import AttentionFactory, attention_factory, list_attention

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")
AMP_DTYPES = ("bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")

# Dataset options `excite train` / `excite compare` use unless the user sets them: sized so
# that the no-argument demo finishes within 3 minutes on 2 CPU cores (see docs/training.md).
DEFAULT_DATA_OPTIONS: dict[str, dict[str, Any]] = {
    "moving-shapes": {"train_size": 800, "val_size": 400, "cache": True},
}

# Options that may change when a run is resumed; every other field must match the
# saved config, or the resumed run would not continue the same experiment.
RESUME_OVERRIDABLE = frozenset({"epochs", "quiet", "workers", "out", "device", "log_interval",
                                "tensorboard", "save_every"})


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run (field names are the YAML keys).

    Attributes:
        model: registry name for :func:`excite.models.create_model`.
        attention: attention name for the model's ``attention=`` switch, or ``"none"``
            (stored lower-case; with ``attention_kwargs`` it is resolved once, by
            :meth:`attention_factory`, into the object the model receives).
        data: dataset name for :func:`excite.data.load_splits`.
        epochs: passes over the training split.
        batch_size: global batch size (split evenly across DDP processes).
        lr: peak learning rate.
        optimizer: ``"sgd"`` (momentum 0.9, Nesterov) or ``"adamw"``.
        schedule: ``"cosine"`` (per step, to zero), ``"step"`` (x0.1 every
            ``step_epochs`` epochs) or ``"constant"``.
        warmup_epochs: linear warm-up length in epochs (fractions allowed).
        weight_decay: decoupled for AdamW, L2 for SGD.
        label_smoothing: cross-entropy label smoothing, in [0, 1).
        amp: ``None``, ``"bf16"`` or ``"fp16"`` autocast (GradScaler only for fp16 on CUDA).
        channels_last: use channels_last / channels_last_3d memory format.
        compile: wrap the model in ``torch.compile``.
        seed: seeds weights, data order (per epoch: ``DistributedSampler(seed=seed)``'s
            permutation for that epoch, and the global RNGs from ``epoch_seed(seed, epoch)``)
            and the data split.
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        workers: DataLoader worker processes.
        spatial_dims: model rank; ``None`` takes the dataset's.
        data_dir: folder for file-backed datasets.
        data_options: extra keyword options for the dataset.
        val_fraction: validation share for datasets without a test split.
        strict: stop at the first unreadable data file instead of skipping it.
        train_subset / val_subset: use a seeded random subset of that many samples.
        model_kwargs: extra keyword arguments for ``create_model``.
        attention_kwargs: options of the attention module (``--attention-option``).
        out: parent folder of run directories.
        name: run directory name (default: ``model-attention-data-sSEED``).
        quiet: plain log lines instead of progress bars.
        log_interval: without a progress bar, log a line every this many optimizer steps
            (0: only the line per epoch).
        tensorboard: also log scalars per step and per epoch to ``RUN_DIR/tensorboard/``
            (needs the ``tensorboard`` package).
        save_every: also save the resumable ``state.pt`` every this many optimizer steps
            (``None``: at the end of each epoch only), so a killed run loses at most that
            many steps.
        init_from: a weights file loaded into the freshly built model before the first
            step (:func:`excite.interop.load_weights_into`: safetensors, or a torch
            checkpoint read with ``weights_only=True``); not used on resume.
        init_exclude: ``fnmatch`` patterns of model keys ``init_from`` leaves at their
            initial values, e.g. ``["fc.*"]`` for a new classifier head.
    """

    model: str = "tiny_resnet"
    attention: str = "cbam"
    data: str = "moving-shapes"
    epochs: int = 4
    batch_size: int = 32
    lr: float = 0.003
    optimizer: str = "adamw"
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    step_epochs: int = 30
    weight_decay: float = 0.01
    label_smoothing: float = 0.0
    amp: str | None = None
    channels_last: bool = False
    compile: bool = False
    seed: int = 0
    device: str = "auto"
    workers: int = 0
    spatial_dims: int | None = None
    data_dir: str | None = None
    data_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    val_fraction: float = 0.2
    strict: bool = False
    train_subset: int | None = None
    val_subset: int | None = None
    model_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    attention_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    out: str = "runs"
    name: str | None = None
    quiet: bool = False
    log_interval: int = 50
    tensorboard: bool = False
    save_every: int | None = None
    init_from: str | None = None
    init_exclude: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        self.attention = canonical_attention(self.attention)  # type: ignore[assignment]
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first field whose value is not allowed."""
        check_positive_int(self.epochs, name="epochs")
        check_positive_int(self.batch_size, name="batch_size")
        check_positive_int(self.step_epochs, name="step_epochs")
        if not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise ValueError(f"lr must be a number > 0, got {self.lr!r}")
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        if self.amp is not None:
            _choice("amp", self.amp, AMP_DTYPES)
        _choice("device", self.device, DEVICES)
        for key in ("weight_decay", "warmup_epochs"):
            check_number(getattr(self, key), name=key, minimum=0)
        check_number(self.label_smoothing, name="label_smoothing", minimum=0, maximum=1,
                     strict_maximum=True)
        for key in ("strict", "channels_last", "compile", "quiet", "tensorboard"):
            check_bool(getattr(self, key), name=key)
        if isinstance(self.log_interval, bool) or not isinstance(self.log_interval, int) \
                or self.log_interval < 0:
            raise ValueError(f"log_interval must be an int >= 0, got {self.log_interval!r}")
        if self.save_every is not None:
            check_positive_int(self.save_every, name="save_every")
        if self.init_from is not None and (not isinstance(self.init_from, str) or not self.init_from):
            raise ValueError(f"init_from must be a path to a weights file or null, got {self.init_from!r}")
        if not isinstance(self.init_exclude, list) or not all(
                isinstance(p, str) and p for p in self.init_exclude):
            raise ValueError(f"init_exclude must be a list of key patterns such as ['fc.*'], "
                             f"got {self.init_exclude!r}")
        if self.init_exclude and self.init_from is None:
            raise ValueError(f"init_exclude {self.init_exclude!r} needs init_from (the weights "
                             "file it leaves keys of)")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise ValueError(f"workers must be an int >= 0, got {self.workers!r}")
        if self.spatial_dims is not None and self.spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2, 3 or null, got {self.spatial_dims!r}")
        for key in ("train_subset", "val_subset"):
            if getattr(self, key) is not None:
                check_positive_int(getattr(self, key), name=key)
        for key in ("data_options", "model_kwargs", "attention_kwargs"):
            if not isinstance(getattr(self, key), dict):
                raise ValueError(f"{key} must be a mapping, got {getattr(self, key)!r}")
        if self.name is not None and (not self.name or "/" in self.name or self.name in (".", "..")):
            raise ValueError(f"name must be a plain folder name, got {self.name!r}")
        names = ["none", *list_attention()]
        if self.attention not in names:
            raise ValueError(
                f"unknown attention {self.attention!r}; valid attention names: {', '.join(names)}"
            )
        self.attention_factory()  # unknown or misspelt attention options fail here

    def attention_factory(self) -> AttentionFactory:
        """The attention the model gets: ``attention`` with ``attention_kwargs``, resolved
        into one :class:`~excite.layers.AttentionFactory` (None/"none": no attention)."""
        return attention_factory(self.attention, **self.attention_kwargs)

    @property
    def run_name(self) -> str:
        """The run directory's name."""
        return self.name or f"{self.model}-{self.attention}-{self.data}-s{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, base: TrainConfig | None = None) -> TrainConfig:
        """Build a config from ``values`` on top of ``base`` (default: the defaults).

        Keys may use ``-`` or ``_``. Unknown keys raise ``ValueError`` listing the valid ones.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        merged = (base or cls()).to_dict()
        for key, value in values.items():
            norm = str(key).replace("-", "_")
            if norm not in fields:
                raise ValueError(
                    f"unknown config key {key!r}; valid keys: {', '.join(sorted(fields))}"
                )
            merged[norm] = value
        merged["attention"] = canonical_attention(merged.get("attention"))
        return cls(**merged)


@dataclasses.dataclass(frozen=True)
class FieldDoc:
    """One line of documentation for a :class:`TrainConfig` field (its ``--help`` line).

    Attributes:
        help: what the field does, one phrase.
        default: how to show the default when the dataclass value does not say it well
            (``"the dataset's"`` for ``spatial_dims=None``); ``None``: show the value.
        choices: the allowed values, for fields that take one of a few.
        metavar: the placeholder shown in usage (``N``, ``DIR``).
    """

    help: str
    default: str | None = None
    choices: tuple[Any, ...] | None = None
    metavar: str | None = None


#: Every :class:`TrainConfig` field, documented once; the CLI's training flags and their
#: help are generated from this table (tests check that it covers every field).
FIELD_DOCS: dict[str, FieldDoc] = {
    "model": FieldDoc("model name (see `excite profile --list`)"),
    "attention": FieldDoc("attention family, or none (see `excite.list_attention()`)"),
    "data": FieldDoc("dataset name (see `excite datasets`)"),
    "epochs": FieldDoc("passes over the training split", metavar="N"),
    "batch_size": FieldDoc("global batch size (split evenly across DDP processes)", metavar="N"),
    "lr": FieldDoc("peak learning rate", metavar="LR"),
    "optimizer": FieldDoc("sgd (momentum 0.9, Nesterov) or adamw", choices=OPTIMIZERS),
    "schedule": FieldDoc("learning rate per step: cosine to zero, step (x0.1 every "
                         "--step-epochs epochs) or constant", choices=SCHEDULES),
    "warmup_epochs": FieldDoc("linear warm-up length in epochs (fractions allowed)", metavar="E"),
    "step_epochs": FieldDoc("epochs between the x0.1 decays of --schedule step", metavar="N"),
    "weight_decay": FieldDoc("weight decay (decoupled for adamw, L2 for sgd)", metavar="WD"),
    "label_smoothing": FieldDoc("cross-entropy label smoothing, in [0, 1)", metavar="EPS"),
    "amp": FieldDoc("mixed-precision autocast dtype (GradScaler only for fp16 on CUDA)",
                    default="off: float32", choices=AMP_DTYPES),
    "channels_last": FieldDoc("channels_last / channels_last_3d memory format"),
    "compile": FieldDoc("wrap the model in torch.compile"),
    "seed": FieldDoc("seed of the weights, the data split and every epoch's data order", metavar="N"),
    "device": FieldDoc("auto (CUDA when available), cpu or cuda", choices=DEVICES),
    "workers": FieldDoc("DataLoader worker processes", metavar="N"),
    "spatial_dims": FieldDoc("model rank", default="the dataset's", choices=(1, 2, 3)),
    "data_dir": FieldDoc("folder holding a file-backed dataset", default="none", metavar="DIR"),
    "data_options": FieldDoc("dataset option (see `excite datasets NAME`), e.g. train_size=256"),
    "val_fraction": FieldDoc("validation share for datasets without a test split", metavar="F"),
    "strict": FieldDoc("stop at the first unreadable data file", default="off: skip it and count"),
    "train_subset": FieldDoc("train on a seeded random subset of N samples (at most the split's size)",
                             default="all", metavar="N"),
    "val_subset": FieldDoc("validate on a seeded random subset of N samples (at most the split's size)",
                           default="all", metavar="N"),
    "model_kwargs": FieldDoc("extra create_model keyword, e.g. stride_in_1x1=true"),
    "attention_kwargs": FieldDoc("attention module option, e.g. variant=official"),
    "out": FieldDoc("parent folder of run directories", metavar="DIR"),
    "name": FieldDoc("run directory name; a taken default name gets -2, -3, ...",
                     default="MODEL-ATTENTION-DATA-sSEED"),
    "quiet": FieldDoc("never draw a progress bar: plain log lines"),
    "log_interval": FieldDoc("without a progress bar (no terminal, or --quiet), log a line every N "
                             "steps; 0: one line per epoch", metavar="N"),
    "tensorboard": FieldDoc("also log scalars per step and per epoch to RUN_DIR/tensorboard/ "
                            "(needs the tensorboard package)"),
    "save_every": FieldDoc("also save the resumable state every N optimizer steps, so a killed "
                           "run loses at most N steps", default="at the end of each epoch", metavar="N"),
    "init_from": FieldDoc("weights file (safetensors, or a torch checkpoint) loaded into the new "
                          "model before training (see `excite convert`)", default="none", metavar="FILE"),
    "init_exclude": FieldDoc("model key pattern --init-from leaves alone, repeatable (e.g. 'fc.*' "
                             "for a new head)", default="none", metavar="PATTERN"),
}


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping (safe loader); raise ``ExciteError`` on a missing/bad file."""
    yaml = require("yaml", extra="train", purpose="reading YAML configs")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ExciteError(f"config file {path} is not valid YAML: {describe_yaml_error(exc)}") from exc
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ExciteError(f"config file {path} must hold a mapping, got {type(values).__name__}")
    return values


def dump_yaml(config: TrainConfig) -> str:
    yaml = require("yaml", extra="train", purpose="writing YAML configs")
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def canonical_attention(value: object) -> object:
    """The name a config stores: the factory's name ("none" for None, "" or "None";
    lower-case otherwise). Values that are not names are left for validation."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return "none"
    if isinstance(value, str):
        return value.strip().lower()
    return value


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
