"""``TrainConfig``: every setting of ``geco-tf train`` in one place, each with its default and why.

One frozen dataclass is the single source of truth for a training run: :func:`train_geco`
takes it, ``RUN/config.json`` stores it (under ``"config"``), ``--resume`` reads it back, and the
command line's options, defaults and help are generated from its fields (``cli/train.py``), so a
default is written exactly once. Two presets ship as TOML files beside this module
(:func:`preset`): ``default`` (what measured best on the built-in data, the dataclass's own
defaults) and ``paper`` (section 3.1 of the GECO paper as written, for Table 1's reproduction).

Settings come in layers, later ones winning: preset < config file (``from_toml``, any subset of
the fields) < explicit command-line options < ``--set key=value`` (:meth:`TrainConfig.with_overrides`).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import tomllib

from geco_tf.errors import UserError

#: Generators (``geco_tf.models.build_generator``): the paper's core U-Net and its two variants.
GENERATORS = ("unet", "residual", "multi-residual")
#: Co-trained classifiers (``geco_tf.models.build_classifier``).
CLASSIFIERS = ("dds", "maxpool")
#: Numeric precision policies (``geco_tf.training.precision``).
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
#: ``tf.distribute`` strategies (``geco_tf.training.distribute``).
STRATEGIES = ("auto", "mirrored", "multiworker")
#: Probes fitted afresh after each epoch for the best-epoch rule (``fresh_probe.py``).
SELECTION_PROBES = ("fourier", "none")
#: Presets shipped in ``geco_tf/training/presets/``.
PRESETS = ("default", "paper")
#: Settings that were measured on the built-in data, were not better than the defaults and were
#: deleted (``docs/what-we-tried.md`` says what each measured and where its code last lived),
#: with the value that meant "off": a run directory written before may still hold them, and
#: resumes only if each is at that value.
REMOVED_SETTINGS = {
    "edit_space": "logit",
    "linear_filter": 0,
    "noise_channels": 0,
    "background_gain": False,
    "zero_background": False,
    "fidelity": "mse",
    "ssim_weight": 20.0,
    "ssim_setpoint": 0.0,
    "beta_rate": 0.05,
    "classifier_snapshots": 0,
    "classifier_holdout": 0.0,
    "classifier_shift": 0,
    "classifier_flip": False,
    "lr_schedule": "constant",
    "generator_ema": 0.0,
}


def _opt(default: Any, help: str, choices: tuple | None = None, **limits: float) -> Any:
    """A dataclass field with its one-line help (and allowed values) in ``metadata``."""
    meta = {"help": help}
    if choices:
        meta["choices"] = choices
    meta.update(limits)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class TrainConfig:
    """Every training setting of GECO (``docs/method.md`` says why each default is what it is)."""

    # -- the networks (paper 3.1, 3.1.1, 3.1.2)
    generator: str = _opt("unet", "Generator: the paper's core U-Net or its residual variants.", GENERATORS)
    classifier: str = _opt("dds", "Co-trained classifier: DeepDicomSort-style, or with a final max-pool.", CLASSIFIERS)
    classifier_padding: str = _opt(
        "auto", "Classifier convolution padding; auto = 'valid' (DeepDicomSort) when the image is large enough.",
        ("auto", "valid", "same"),
    )
    base_filters: int = _opt(16, "Generator width (filters at full resolution).", min=1)
    depth: int = _opt(3, "U-Net levels.", min=1)
    input_skip: bool = _opt(True, "U-Net starts as the identity (input added before its tanh) and learns only the edit.")
    output_band: str = _opt(
        "auto", "U-Net only: low-pass the output to the k-space band every scanner records: auto (the dataset's), "
        "off, or ROWS,COLS as fractions of Nyquist.",
    )
    three_player: bool = _opt(False, "Add the discriminator (real vs generated): the paper's three-player game.")
    spectral_adversary: bool = _opt(True, "Also play against a classifier of Fourier-magnitude features.")
    # -- the losses (eqs. 1-3)
    beta: float = _opt(0.001, "Weight of the pixel term at 512x512 (the paper used 0.02).", min=0.0)
    beta_scaling: str = _opt(
        "area", "area: beta * 512^2/(H*W) so the balance holds at any size; none: beta as given.", ("area", "none")
    )
    no_mse: bool = _opt(False, "Drop the pixel term (Table 1's last row).")
    disc_weight: float = _opt(1.0, "Weight of the generator's BCE(1, D(G(X))) term (three-player).", min=0.0)
    spectral_weight: float = _opt(1.0, "Weight of the spectral adversary's term in the generator loss.", min=0.0)
    label_smoothing: float = _opt(0.1, "Label smoothing of the classifiers' cross-entropy.", min=0.0, max=0.5)
    # -- the optimisers
    g_lr: float = _opt(1e-3, "Generator Adam learning rate.", min=0.0)
    c_lr: float = _opt(1e-3, "Classifier Adam learning rate.", min=0.0)
    d_lr: float = _opt(5e-4, "Discriminator Adam learning rate.", min=0.0)
    s_lr: float = _opt(1e-3, "Spectral adversary's Adam learning rate.", min=0.0)
    adam_beta_1: float = _opt(0.5, "Adam's beta_1 for every network (0.5: the usual choice for GANs).", min=0.0, max=1.0)
    critic_steps: int = _opt(2, "Classifier updates per generator update.", min=1, max=5)
    bn_momentum: float = _opt(0.9, "Batch-norm momentum of the classifiers (0.9: the generator moves their input).",
                              min=0.0, max=1.0)
    pool_size: int = _opt(512, "Replay pool of earlier generated images for the classifier (0 = off).", min=0)
    pool_fraction: float = _opt(0.5, "Share of each classifier batch drawn from the replay pool.", min=0.0, max=1.0)
    warmup_steps: int = _opt(100, "Generator steps with the pixel term only, before the game starts.", min=0)
    # -- the schedule and the kept epoch
    epochs: int = _opt(15, "Epochs.", min=1)
    batch_size: int = _opt(32, "Global batch size.", min=1)
    steps_per_epoch: int | None = _opt(None, "At most this many steps per epoch (None = the whole training split).")
    time_budget_minutes: float = _opt(
        0.0, "Minutes of training: no epoch starts that would end after it (0 = no limit).", min=0.0
    )
    ssim_target: float = _opt(0.972, "Validation SSIM an epoch must reach to be kept as final.", min=0.0, max=1.0)
    selection_probe: str = _opt(
        "fourier", "Probe fitted afresh on G(train) after each epoch; the kept epoch must fool it too (none = off).",
        SELECTION_PROBES,
    )
    # -- the machine
    precision: str = _opt("auto", "auto = mixed_float16 on a GPU, else float32.", PRECISIONS)
    strategy: str = _opt("auto", "tf.distribute strategy (multiworker reads TF_CONFIG).", STRATEGIES)
    jit: bool = _opt(False, "Compile the train step with XLA.")
    seed: int = _opt(0, "Random seed.")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            choices = f.metadata.get("choices")
            if choices and value not in choices:
                raise UserError(f"{f.name} = {value!r}: choose one of {', '.join(choices)}")
            if "min" in f.metadata and value < f.metadata["min"]:
                raise UserError(f"{f.name} = {value!r}: must be >= {f.metadata['min']}")
            if "max" in f.metadata and value > f.metadata["max"]:
                raise UserError(f"{f.name} = {value!r}: must be <= {f.metadata['max']}")

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> TrainConfig:
        """A config from ``{field: value}`` (any subset); values are parsed to the field's type.
        Raises :class:`UserError` naming ``source`` for an unknown key or a bad value."""
        return cls().replace(_source=source, **values)

    @classmethod
    def from_stored(cls, stored: dict, source: str = "config.json") -> TrainConfig:
        """The config of a run directory's ``config.json``: its ``"config"``, or the ``"options"``
        of a run written before this dataclass (settings since removed must be off, and
        ``ssim_weight``/``beta_rate``, which only acted through them, are ignored)."""
        if "config" in stored:
            return cls.from_dict(stored["config"], source)
        values = dict(stored.get("options", {}))
        for key, off in REMOVED_SETTINGS.items():
            value = values.pop(key, off)
            if key not in ("ssim_weight", "beta_rate") and value != off:
                raise UserError(f"{source}: this run used {key} = {value!r}, which geco-tf no longer has "
                                "(docs/what-we-tried.md names the commit that still does)")
        return cls.from_dict(values, source)

    @classmethod
    def from_toml(cls, path: str | Path) -> TrainConfig:
        """A config from a TOML file holding any subset of the fields (top-level keys)."""
        return cls().merge_toml(path)

    def merge_toml(self, path: str | Path) -> TrainConfig:
        """This config with the fields a TOML file sets."""
        return self.replace(_source=str(path), **read_toml(path))

    def replace(self, _source: str = "config", **values: Any) -> TrainConfig:
        """A copy with ``values`` changed (field names; each value parsed to the field's type)."""
        fields = field_types()
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise UserError(f"{_source}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(fields)})")
        parsed = {k: parse_value(k, v, _source) for k, v in values.items()}
        try:
            return dataclasses.replace(self, **parsed)
        except UserError as exc:  # a value out of its range or choices: say where it came from
            raise UserError(f"{_source}: {exc}") from None

    def with_overrides(self, assignments: list[str] | tuple[str, ...], source: str = "--set") -> TrainConfig:
        """A copy with ``["key=value", ...]`` applied in order (``--set``); values are parsed as
        TOML scalars when they can be (``true``, ``5e-4``, ``"x"``) and as text otherwise."""
        return self.replace(_source=source, **parse_assignments(assignments, source))

    def to_dict(self) -> dict:
        """``{field: value}``, JSON-ready (what ``RUN/config.json`` holds under ``"config"``)."""
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        """The config as a TOML file (a field left at None is left out)."""
        lines = [f"{k} = {json.dumps(v)}" for k, v in self.to_dict().items() if v is not None]
        return "\n".join(lines) + "\n"


def field_types() -> dict[str, type]:
    """``{field name: its type}`` (``int | None`` given as ``int``)."""
    hints = typing.get_type_hints(TrainConfig)
    out = {}
    for f in dataclasses.fields(TrainConfig):
        hint = hints[f.name]
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        out[f.name] = hint
    return out


def config_fields() -> dict[str, dataclasses.Field]:
    """The dataclass fields by name (default, ``metadata["help"]``, ``metadata["choices"]``)."""
    return {f.name: f for f in dataclasses.fields(TrainConfig)}


def parse_value(key: str, value: Any, source: str = "config") -> Any:
    """``value`` as the type of field ``key`` (text such as ``"5e-4"`` or ``"true"`` accepted)."""
    kind = field_types()[key]
    if value is None:
        if config_fields()[key].default is None:
            return None
        raise UserError(f"{source}: {key} cannot be empty")
    if isinstance(value, str) and kind is not str:
        value = _parse_text(value)
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            raise ValueError
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if isinstance(value, (list, tuple)):  # e.g. output_band = [0.8, 0.85]
            return ",".join(f"{float(v):g}" for v in value)
        return str(value)
    except (TypeError, ValueError):
        raise UserError(f"{source}: {key} = {value!r} is not {_KIND_NAMES.get(kind, kind.__name__)}") from None


_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "text"}


def read_toml(path: str | Path) -> dict:
    """The top-level keys of a config file (not yet checked against the fields)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise UserError(f"{path}: cannot read the config file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML ({exc})") from None


def parse_assignments(assignments: list[str] | tuple[str, ...], source: str = "--set") -> dict:
    """``["key=value", ...]`` as ``{key: value}`` (dashes in keys read as underscores), values
    parsed as TOML scalars when they can be (``true``, ``5e-4``, ``"x"``) and as text otherwise."""
    values = {}
    for item in assignments:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UserError(f"{source} {item!r}: use key=value")
        values[key] = _parse_text(text.strip())
    return values


def _parse_text(text: str) -> Any:
    """A ``--set`` value: a TOML scalar (``true``, ``3``, ``5e-4``, ``"a"``) or, failing that, text."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def preset(name: str) -> TrainConfig:
    """The config of a shipped preset (``default`` or ``paper``)."""
    if name not in PRESETS:
        raise UserError(f"--preset {name!r}: choose one of {', '.join(PRESETS)}")
    return TrainConfig.from_toml(preset_path(name))


def preset_path(name: str) -> Path:
    """The TOML file of a shipped preset."""
    return Path(str(resources.files("geco_tf.training") / "presets" / f"{name}.toml"))
