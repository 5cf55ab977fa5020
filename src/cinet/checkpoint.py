"""The checkpoint contract: the typed payload (:class:`CheckpointPayload`), read and written only here.

A cinet checkpoint is a Lightning checkpoint (a ``torch.save`` dict) that, next to Lightning's own keys,
holds ``checkpoint["cinet"]`` — plain Python types only, so that ``torch.load(weights_only=True)`` reads it:

    {
      "format": 1,
      "model": {...},     # keyword arguments of cinet.models.build_model (variant, encoder, num_classes, ...)
      "dataset": {...},   # cinet.data.DatasetInfo.to_dict(): classes, palette, intrinsics, the input mean/std
      "config": {...},    # the merged run config (optional)
      "git": "<rev>",     # revision of the code that wrote it (optional)
      "train_size": [H, W],  # image size the model was trained at (optional)
      "stage": 1 | 2 | 3,    # the training stage that wrote it (training checkpoints)
      "nonfinite_skipped": N,  # updates skipped for non-finite gradients in that stage (training checkpoints)
    }

Model weights are ``checkpoint["state_dict"]`` with keys prefixed ``model.`` (the LightningModule attribute).

:meth:`CheckpointPayload.from_dict` is the one reader of this entry; it also migrates older checkpoints, once:
no ``train_size`` (before it was written) -> ``data.image_size`` of the stored config, else the synthetic
dataset's ``data.options.size`` (default 240x320, the size that dataset rendered then); a mean/std on the
0..255 scale -> the 0..1 scale. :meth:`CheckpointPayload.input_spec` gives the model's
:class:`cinet.preprocess.InputSpec` (mean/std, training size, evaluation size), the one input description
that eval, predict, serve, export and INT8 calibration use.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cinet.data.info import DatasetInfo
from cinet.errors import CheckpointError, ConfigError, describe
from cinet.models import build_model
from cinet.models.cinet import build_kwargs_of
from cinet.preprocess import InputSpec, unit_scale
from cinet.utils.io import atomic_save

CHECKPOINT_FORMAT = 1
STATE_PREFIX = "model."
#: The synthetic dataset's render size before ``train_size`` was stored (legacy checkpoints only).
LEGACY_SYNTHETIC_SIZE = (240, 320)


def _size(value: Any) -> tuple[int, int] | None:
    """``[H, W]`` / ``(H, W)`` / ``S`` -> ``(H, W)``; None for None or anything else."""
    if isinstance(value, int):
        value = (value, value)
    if not value or not isinstance(value, list | tuple) or len(value) != 2:
        return None
    return int(value[0]), int(value[1])


@dataclass(frozen=True)
class CheckpointPayload:
    """The ``checkpoint["cinet"]`` entry, typed (see the module docstring for its stored form).

    Attributes:
        model: Keyword arguments of :func:`cinet.models.build_model` that rebuild the network.
        dataset: The dataset description (:meth:`cinet.data.DatasetInfo.to_dict`): class names, palette,
            intrinsics, and the input mean / std the model was trained with; empty when unknown.
        config: The merged run config (plain types); empty when not stored.
        git: Revision of the code that wrote it, or None.
        train_size: ``(H, W)`` of the training images, or None when unknown.
        stage: Training stage that wrote it (training checkpoints), or None.
        nonfinite_skipped: Updates skipped for non-finite gradients in that stage.
        format: Layout version (:data:`CHECKPOINT_FORMAT`).
    """

    model: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    git: str | None = None
    train_size: tuple[int, int] | None = None
    stage: int | None = None
    nonfinite_skipped: int = 0
    format: int = CHECKPOINT_FORMAT

    def __post_init__(self) -> None:
        object.__setattr__(self, "train_size", _size(self.train_size))

    @classmethod
    def from_dict(cls, data: Any) -> CheckpointPayload:
        """Read (and migrate, see the module docstring) a stored ``checkpoint["cinet"]`` entry.

        Raises:
            ValueError: Not a mapping, no ``model`` entry, or a format other than :data:`CHECKPOINT_FORMAT`.
        """
        if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
            raise ValueError("checkpoint['cinet'] has no 'model' entry (build_model arguments)")
        fmt = data.get("format")
        if fmt != CHECKPOINT_FORMAT:
            raise ValueError(f"checkpoint format {fmt!r} is not supported (expected {CHECKPOINT_FORMAT})")
        config = dict(data.get("config") or {})
        train_size = _size(data.get("train_size"))
        if train_size is None:  # legacy: written before train_size existed
            stored = config.get("data") or {}
            train_size = _size(stored.get("image_size"))
            if train_size is None and stored.get("name") == "synthetic":
                train_size = _size((stored.get("options") or {}).get("size", LEGACY_SYNTHETIC_SIZE))
        stage = data.get("stage")
        return cls(
            model=dict(data["model"]),
            dataset=dict(data.get("dataset") or {}),
            config=config,
            git=data.get("git"),
            train_size=train_size,
            stage=int(stage) if stage is not None else None,
            nonfinite_skipped=int(data.get("nonfinite_skipped", 0) or 0),
            format=int(fmt),
        )

    @classmethod
    def of(cls, checkpoint: dict[str, Any], *, strict: bool = True) -> CheckpointPayload:
        """The payload of a loaded checkpoint dict (:meth:`from_dict` of its ``"cinet"`` entry).

        Args:
            checkpoint: A loaded (or being restored) checkpoint dict.
            strict: Raise for a missing or unreadable entry; with False an empty payload stands in (where only
                the weights or the RNG states of the dict matter).

        Raises:
            ValueError: ``strict`` and no ``"cinet"`` entry, or one :meth:`from_dict` refuses.
        """
        try:
            if "cinet" not in checkpoint:
                raise ValueError("not a cinet checkpoint (no 'cinet' entry)")
            return cls.from_dict(checkpoint["cinet"])
        except ValueError:
            if strict:
                raise
            return cls()

    def put(self, checkpoint: dict[str, Any]) -> None:
        """Store this payload in a checkpoint dict being saved (its ``"cinet"`` entry, :meth:`to_dict`)."""
        checkpoint["cinet"] = self.to_dict()

    def to_dict(self) -> dict[str, Any]:
        """The stored form (plain types: ``weights_only=True`` reads it)."""
        out: dict[str, Any] = {
            "format": self.format,
            "model": dict(self.model),
            "dataset": dict(self.dataset),
            "config": dict(self.config),
            "git": self.git,
            "train_size": list(self.train_size) if self.train_size is not None else None,
        }
        if self.stage is not None:
            out["stage"] = int(self.stage)
            out["nonfinite_skipped"] = int(self.nonfinite_skipped)
        return out

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """The input ``(mean, std)`` (RGB, 0..1 scale) the model was trained with, or None if unrecorded.

        Read from the dataset entry, which training fills with the encoder's normalisation; values written on
        the 0..255 scale (any mean above 1) are divided by 255 (:func:`cinet.preprocess.unit_scale`). Every path
        that feeds a checkpoint's model (eval, export and its INT8 calibration, predict, serve) normalises with
        this, never with a default.
        """
        mean, std = self.dataset.get("mean"), self.dataset.get("std")
        if mean is None or std is None:
            return None
        return unit_scale(mean, std)

    @property
    def eval_size(self) -> tuple[int, int] | None:
        """``data.eval_size`` of the stored config: evaluation's fixed network input ``(H, W)``, or None."""
        return _size((self.config.get("data") or {}).get("eval_size"))

    @property
    def class_names(self) -> list[str] | None:
        """The class names in id order the segmentation head was trained on, or None when unknown."""
        names = self.dataset.get("class_names")
        return list(names) if names else None

    def input_spec(self, fallback: tuple[Sequence[float], Sequence[float]] | None = None) -> InputSpec:
        """The model's :class:`cinet.preprocess.InputSpec`: stored mean/std (else ``fallback``, e.g. the rebuilt
        encoder's), training size and evaluation size.

        Raises:
            ValueError: No mean/std stored and no ``fallback``.
        """
        norm = self.normalization or fallback
        if norm is None:
            raise ValueError("checkpoint records no input mean/std")
        return InputSpec(norm[0], norm[1], train_size=self.train_size, eval_size=self.eval_size)

    def dataset_info(self) -> DatasetInfo:
        """The dataset description as a :class:`cinet.data.DatasetInfo`.

        Raises:
            ValueError: No dataset entry. TypeError / ValueError: an entry DatasetInfo refuses.
        """
        if not self.dataset:
            raise ValueError("checkpoint has no dataset info (classes, palette, mean/std)")
        return DatasetInfo.from_dict(self.dataset)


def model_state_dict(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The model's own state dict (``model.`` prefix removed) from a loaded checkpoint dict."""
    state = checkpoint["state_dict"]
    return {k[len(STATE_PREFIX) :]: v for k, v in state.items() if k.startswith(STATE_PREFIX)}


def read_checkpoint(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """Load a checkpoint file safely (``weights_only=True``); raises CheckpointError with the path on failure."""
    p = Path(path)
    if p.is_dir():
        guess = p / "last.ckpt"
        if not guess.is_file():
            found = sorted(p.glob("*.ckpt")) or sorted(p.glob("*/last.ckpt"))
            guess = found[-1] if found else guess
        raise CheckpointError(f"{p}: is a directory; did you mean {guess}?")
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint not found")
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated / not a checkpoint
        raise CheckpointError(
            f"{p}: cannot read checkpoint, truncated or not a torch file "
            f"({describe(exc, 160, first_sentence=True)})"
        ) from exc
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "cinet" not in ckpt:
        raise CheckpointError(f"{p}: not a cinet checkpoint (missing 'state_dict' or 'cinet' entry)")
    return ckpt


def _shape(t: Any) -> str:
    return "[" + ",".join(str(int(s)) for s in getattr(t, "shape", ())) + "]"


def _prefixes(keys: list[str], limit: int = 4) -> str:
    """Group state-dict keys by their top-level module (``sum.query.weight`` -> ``sum.*``) for messages."""
    groups: dict[str, int] = {}
    for k in keys:
        head = k.split(".", 1)[0]
        groups[head] = groups.get(head, 0) + 1
    items = [f"{head}.* ({n})" for head, n in groups.items()]
    more = f", +{len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


_RESNET_LAYER3_BLOCKS = {
    (False, 2): "resnet18",
    (False, 6): "resnet34",
    (True, 6): "resnet50",
    (True, 23): "resnet101",
}


def guess_architecture(state: dict[str, Any]) -> dict[str, Any]:
    """What a model state dict looks like: ``encoder`` (resnet name or None), ``use_sum``, ``sharing``."""
    bottleneck = any(k.startswith("encoder.layer1.0.conv3.") for k in state)
    blocks = {k.split(".")[2] for k in state if k.startswith("encoder.layer3.")}
    if any(k.startswith("share.0.context.") for k in state):
        sharing = "fsm"
    elif any(k.startswith("share.0.d1.") for k in state):
        sharing = "lsu"
    else:
        sharing = "none"
    return {
        "encoder": _RESNET_LAYER3_BLOCKS.get((bottleneck, len(blocks))),
        "use_sum": any(k.startswith("sum.") for k in state),
        "sharing": sharing,
    }


def describe_mismatch(
    state: dict[str, Any], expected: dict[str, Any], model_kwargs: dict[str, Any] | None = None
) -> str | None:
    """Say in one line how the weights ``state`` differ from a model's ``expected`` state dict.

    Returns None when they fit (same keys, same shapes). Otherwise the message names what differs: a class
    count (segmentation head), missing / unexpected modules (another variant: SUM, FSM or LSU present in one
    and not the other) and tensors of another shape (another encoder or channel width).
    """
    missing = sorted(k for k in expected if k not in state)
    unexpected = sorted(k for k in state if k not in expected)
    wrong = sorted(
        k
        for k in expected
        if k in state and tuple(getattr(state[k], "shape", ())) != tuple(expected[k].shape)
    )
    if not (missing or unexpected or wrong):
        return None
    parts: list[str] = []
    kw = model_kwargs or {}
    num_classes = kw.get("num_classes")
    # A tensor whose first dimension is the model's class count and whose other dims agree is a
    # segmentation-head tensor: then the class count is what differs.
    class_keys = [
        k
        for k in wrong
        if num_classes is not None
        and len(expected[k].shape) >= 1
        and expected[k].shape[0] == num_classes
        and tuple(expected[k].shape[1:]) == tuple(state[k].shape[1:])
    ]
    if class_keys:
        n_got = int(state[class_keys[0]].shape[0])
        parts.append(f"class count differs (weights have {n_got} classes, model has {num_classes})")
    got = guess_architecture(state)
    want = guess_architecture(expected)
    if got["encoder"] != want["encoder"] and got["encoder"] and want["encoder"]:
        parts.append(f"encoder differs (weights are {got['encoder']}, model is {want['encoder']})")
    if (got["use_sum"], got["sharing"]) != (want["use_sum"], want["sharing"]):
        parts.append(
            f"variant differs (weights: SUM {'yes' if got['use_sum'] else 'no'}, sharing {got['sharing']}; "
            f"model {kw.get('variant', '?')!r}: SUM {'yes' if want['use_sum'] else 'no'}, sharing {want['sharing']})"
        )
    if parts:
        return "; ".join(parts)
    if missing or unexpected:
        variant = kw.get("variant")
        what = f"variant {variant!r} " if variant is not None else ""
        if missing:
            parts.append(f"{what}model needs modules the weights lack: {_prefixes(missing)}")
        if unexpected:
            parts.append(f"weights have modules the {what}model lacks: {_prefixes(unexpected)}")
        parts[-1] += " (another variant?)"
    other = [k for k in wrong if k not in class_keys]
    if other:
        k = other[0]
        enc = kw.get("encoder")
        hint = f" (another encoder or channel width than {enc!r}?)" if enc is not None else ""
        parts.append(
            f"{len(other)} tensor(s) differ in shape, e.g. {k}: weights {_shape(state[k])} vs model "
            f"{_shape(expected[k])}{hint}"
        )
    return "; ".join(parts)


def save_model_checkpoint(
    path: str | Path,
    model: Any,
    model_kwargs: dict[str, Any] | None = None,
    dataset_info: Any = None,
    config: dict[str, Any] | None = None,
    git: str | None = None,
    train_size: tuple[int, int] | None = None,
) -> Path:
    """Write a minimal cinet checkpoint (same layout as the engine's) atomically.

    Used by tests and tools that build a model outside of training.

    Args:
        path: Destination ``.ckpt`` file.
        model: The :class:`cinet.models.CINet` whose weights are stored (prefix ``model.``).
        model_kwargs: Keyword arguments of :func:`cinet.models.build_model` that rebuild ``model``
            (default: ``model.build_kwargs``, set by build_model).
        dataset_info: A :class:`cinet.data.DatasetInfo` or its dict (palette, classes, mean/std, intrinsics).
        config: Optional run config (plain types).
        git: Optional code revision.
        train_size: Optional ``(H, W)`` the model was trained at.

    Returns:
        The path written.
    """
    if model_kwargs is None:
        model_kwargs = build_kwargs_of(model)
        if not model_kwargs:
            raise ValueError(
                "save_model_checkpoint: model_kwargs is required for a model not made by build_model"
            )
    if dataset_info is not None and dataclasses.is_dataclass(dataset_info):
        dataset_info = dataclasses.asdict(dataset_info)
    payload = CheckpointPayload(
        model=dict(model_kwargs),
        dataset=dict(dataset_info or {}),
        config=dict(config or {}),
        git=git,
        train_size=train_size,
    )
    ckpt: dict[str, Any] = {
        "state_dict": {STATE_PREFIX + k: v.detach().cpu() for k, v in model.state_dict().items()}
    }
    payload.put(ckpt)
    p = Path(path)
    atomic_save(p, lambda fh: torch.save(ckpt, fh))
    return p


def load_weights(module: Any, path: str | Path) -> None:
    """Initialise ``module.model`` (and the loss's learned parameters, if stored) from a checkpoint.

    Args:
        module: A :class:`cinet.engine.module.CINetModule` (``.model``, ``.loss`` and its
            :class:`CheckpointPayload` ``.payload``).
        path: A cinet checkpoint.

    Raises:
        CheckpointError: Unreadable file, or weights that do not fit ``module.model`` (see :func:`check_fits`).
    """
    ckpt = read_checkpoint(path)
    state = model_state_dict(ckpt)
    check_fits(module.model, ckpt, path)
    module.model.load_state_dict(state)
    differ = class_name_differences(
        CheckpointPayload.of(ckpt, strict=False).class_names, module.payload.class_names
    )
    if differ:  # fine-tuning onto other classes is legitimate, but never silent
        logging.getLogger("cinet.engine").warning(
            "%s: its segmentation head was trained on other classes (%s); training continues from it",
            path,
            differ,
        )
    loss_state = {k[len("loss.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("loss.")}
    if loss_state:
        module.loss.load_state_dict(loss_state, strict=False)
    logging.getLogger("cinet.engine").info("initialised weights from %s", path)


def check_fits(model: Any, ckpt: dict[str, Any], path: str | Path) -> None:
    """Raise :class:`CheckpointError` naming ``path`` when the checkpoint's weights do not fit ``model``.

    The message says what differs (variant, class count, encoder / channel widths), read from the weights,
    and how many parameters are unexpected, missing or of another shape.
    """

    state = model_state_dict(ckpt)
    kwargs = build_kwargs_of(model)
    if not state:
        raise CheckpointError(f"{path}: state_dict holds no '{STATE_PREFIX}*' weights")
    own = model.state_dict()
    diff = describe_mismatch(state, own, kwargs)
    if diff is not None:
        stored = CheckpointPayload.of(ckpt, strict=False).model
        counts = {
            "unexpected": sum(k not in own for k in state),
            "missing": sum(k not in state for k in own),
            "of another shape": sum(
                k in own and tuple(v.shape) != tuple(own[k].shape) for k, v in state.items()
            ),
        }
        count_text = ", ".join(f"{n} {what}" for what, n in counts.items() if n)
        raise CheckpointError(
            f"{path}: weights do not fit model.variant={kwargs.get('variant')!r} encoder={kwargs.get('encoder')!r} "
            f"num_classes={kwargs.get('num_classes')} (checkpoint: variant={stored.get('variant')!r}, "
            f"encoder={stored.get('encoder')!r}, num_classes={stored.get('num_classes')}): {diff} "
            f"({count_text} parameters)"
        )


def class_name_differences(
    trained: list[str] | None, dataset: list[str] | None, limit: int = 3
) -> str | None:
    """Say which class ids mean different classes in a checkpoint and a dataset of the same class count.

    Args:
        trained: The checkpoint's class names in id order (:attr:`CheckpointPayload.class_names`).
        dataset: The dataset's class names in id order (:class:`cinet.data.DatasetInfo`).
        limit: Differing ids named at most.

    Returns:
        None when the names agree (compared case-insensitively, ``_``, ``-`` and spaces alike), or either list
        is unknown or only placeholders (``class_0``, ``class_1``, ...: a folder dataset given a class count
        without names), or the counts differ (a separate check); else e.g.
        ``3 of 13 class ids differ: id 0 is 'wall' in the checkpoint, 'tv' in the dataset; id 1 ...``.
    """
    if not trained or not dataset or len(trained) != len(dataset):
        return None
    placeholders = [f"class_{i}" for i in range(len(dataset))]
    if list(trained) == placeholders or list(dataset) == placeholders:
        return None

    def norm(name: str) -> str:
        return " ".join(str(name).lower().replace("_", " ").replace("-", " ").split())

    diff = [i for i, (a, b) in enumerate(zip(trained, dataset)) if norm(a) != norm(b)]
    if not diff:
        return None
    shown = "; ".join(
        f"id {i} is {trained[i]!r} in the checkpoint, {dataset[i]!r} in the dataset" for i in diff[:limit]
    )
    more = f"; and {len(diff) - limit} more" if len(diff) > limit else ""
    return f"{len(diff)} of {len(dataset)} class ids differ: {shown}{more}"


def load_model(
    path: str | Path, device: Any = "cpu", *, overrides: dict[str, Any] | None = None
) -> tuple[Any, CheckpointPayload]:
    """Rebuild the model a checkpoint describes and load its weights (``weights_only=True``), in eval mode.

    Args:
        path: A cinet checkpoint (``checkpoint["cinet"]`` + ``state_dict``).
        device: Where to put the model.
        overrides: build_model keyword arguments that replace the stored ones without changing the weights'
            layout (e.g. ``{"attention_impl": "naive"}`` for export).

    Returns:
        ``(model, payload)``: the model's ``input_mean`` / ``input_std`` are the stored ones
        (:attr:`CheckpointPayload.normalization`) when recorded; ``payload`` is the typed
        ``checkpoint["cinet"]`` (old checkpoints migrated).

    Raises:
        CheckpointError: One line naming the file when it is missing, truncated, not a cinet checkpoint, of
            an unknown format, or when its weights do not fit the model its own entry describes (what
            differs: variant, class count, encoder / channel shapes).
    """
    p = Path(path)
    ckpt = read_checkpoint(p, map_location="cpu")
    try:
        payload = CheckpointPayload.of(ckpt)
    except ValueError as exc:
        raise CheckpointError(f"{p}: {exc}") from None
    kwargs = dict(payload.model)
    kwargs["encoder_weights"] = None  # the checkpoint holds the trained weights: never fetch pretrained ones
    kwargs.update(overrides or {})
    try:
        model = build_model(**kwargs)
    except (TypeError, ValueError, KeyError, ConfigError) as exc:
        raise CheckpointError(f"{p}: cannot build the model it describes ({exc})") from exc
    check_fits(model, ckpt, p)
    model.load_state_dict(model_state_dict(ckpt), strict=True)
    stored = payload.normalization
    # what it was trained with (a rebuilt encoder reports its library's current default)
    if stored is not None:
        model.input_mean, model.input_std = stored
        model.normalization_from_checkpoint = True  # Predictor(model, info) uses these over info's
    model.eval()
    return model.to(torch.device(device)), payload
