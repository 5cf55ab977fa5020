"""The inference runtime of a :class:`cinet.Predictor`: eager PyTorch in float32 or bf16, or onnxruntime (float32 or
INT8), chosen per machine by ``auto``.

``--runtime`` (``cinet predict`` / ``serve``) and ``Predictor(runtime=...)`` take one of :data:`RUNTIMES`:

* ``eager-fp32``: the PyTorch model in float32 (the reference every other runtime is checked against).
* ``eager-bf16``: the same model under ``torch.autocast(dtype=torch.bfloat16)`` (outputs back in float32).
* ``onnx-fp32``: onnxruntime on the float32 ONNX graph: a ``--onnx`` file, or the checkpoint exported once per
  :class:`~cinet.Predictor` into a temporary file (:func:`cinet.inference.export.export_onnx`, dynamic sizes);
  the attention / shared features (``--attention``, ``--features``, the web page's attention view) need the
  PyTorch model, so such a run switches to ``eager-fp32`` (one line).
* ``onnx-int8``: onnxruntime on an INT8 file made (and accuracy-checked on real images) by
  ``cinet export --quantize int8``, given as ``--onnx``. Calibration needs real images of the model's domain,
  so a checkpoint is never quantized on the fly.
* ``auto`` (the default): an ONNX file runs as what it is; a PyTorch model by the table below.

``auto`` for a PyTorch model (the measurements: docs/performance.md, "Inference runtime"):

==========================================  ===============  ====================================================
device                                      ``auto`` gives   why
==========================================  ===============  ====================================================
CUDA with bf16 (Ampere and newer)           ``eager-bf16``   tensor cores; the standard choice
CUDA without bf16, MPS, other               ``eager-fp32``
CPU with AMX-BF16 (Intel Sapphire Rapids+)  ``eager-bf16``   Xeon AMX, ResNet-50 240x320: 0.53 s vs fp32 1.09 s
                                                             (2.1x; issue #27)
CPU with AVX-512 BF16 (AMD Zen 4, Intel     ``eager-bf16``   AMD EPYC Zen 4, ResNet-18 / ResNet-50 240x320:
Cooper Lake)                                                 1.50x / 1.31x faster than fp32
CPU without either                          ``eager-fp32``   bf16 is emulated there
==========================================  ===============  ====================================================

``auto`` never exports a checkpoint or quantizes it: the export costs seconds to minutes and INT8 needs
calibration images of the model's domain. Where many images are predicted, an ONNX file can be faster (AMD EPYC
Zen 4, idle: onnxruntime fp32 1.2x and INT8 2.2-2.7x eager fp32; Xeon with AMX: onnxruntime fp32 0.8x, INT8 1.8x;
docs/performance.md): make it once with ``cinet export`` and pass ``--onnx``, which ``auto`` then runs as it is
(an ONNX file is not checked against PyTorch at run time: ``cinet export`` checked it).

Every runtime other than ``eager-fp32`` of a PyTorch model is checked on the first batch it runs against
``eager-fp32`` (:func:`agreement`): depth within 1 % (mean relative difference) and labels within 1 % (fraction of
pixels whose class differs), the parity bounds of ``cinet export``. A batch outside them logs one line with
the numbers (a warning for a runtime asked for by name, an info line for ``auto``'s choice) and the predictor
falls back to ``eager-fp32``. Measured: the pretrained EfficientNet-Lite0 CI-Net of the #28 ablation (64x80, mIoU
13 %) differs under bf16 by 0.8 % in depth and 1.2 % in labels (near-tied classes), so it runs in float32.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cinet.errors import InputError

if TYPE_CHECKING:
    import torch

__all__ = [
    "MAX_DEPTH_REL_DIFF",
    "MAX_LABEL_DISAGREEMENT",
    "RUNTIMES",
    "Agreement",
    "RuntimeChoice",
    "RuntimeChoiceError",
    "agreement",
    "check_runtime",
    "check_runtime_source",
    "resolve_runtime",
]

#: Runtime names (``auto`` first).
RUNTIMES = ("auto", "eager-fp32", "eager-bf16", "onnx-fp32", "onnx-int8")
#: Runtimes of a PyTorch model only.
EAGER_RUNTIMES = ("eager-fp32", "eager-bf16")
#: Parity bounds of a runtime against eager float32 on the same batch (as ``cinet export``'s ONNX check).
MAX_DEPTH_REL_DIFF = 0.01
MAX_LABEL_DISAGREEMENT = 0.01


class RuntimeChoiceError(InputError):
    """A runtime that cannot run this model; ``detail`` is the message without the option's name, so that a
    command can name its own option (``--runtime``)."""

    def __init__(self, where: str, detail: str) -> None:
        super().__init__(f"{where}: {detail}")
        self.detail = detail


@dataclass(frozen=True)
class RuntimeChoice:
    """A resolved runtime and why.

    Attributes:
        runtime: One of :data:`RUNTIMES` other than ``auto``.
        reason: One line for the log (what the probe found, or "asked for").
    """

    runtime: str
    reason: str


def check_runtime(name: str, where: str = "runtime") -> str:
    """``name`` when it is one of :data:`RUNTIMES`.

    Raises:
        RuntimeChoiceError: Another name (one line naming ``where`` and the valid names).
    """
    if name not in RUNTIMES:
        raise RuntimeChoiceError(where, f"unknown runtime {name!r}; valid: {', '.join(RUNTIMES)}")
    return name


def check_runtime_source(runtime: str, *, onnx: bool, where: str = "runtime") -> str:
    """Refuse, before any model is loaded, a runtime that cannot run this kind of model.

    Args:
        runtime: One of :data:`RUNTIMES`.
        onnx: The model is an ONNX file (else a PyTorch checkpoint / model folder / module).
        where: The option or argument named in errors.

    Raises:
        RuntimeChoiceError: An unknown name; an eager runtime for an ONNX file; ``onnx-int8`` for a PyTorch
            model (make the INT8 file with ``cinet export --quantize int8``).
    """
    check_runtime(runtime, where)
    if onnx and runtime in EAGER_RUNTIMES:
        raise RuntimeChoiceError(
            where, f"{runtime} needs a PyTorch model (--checkpoint / --pretrained), not ONNX"
        )
    if not onnx and runtime == "onnx-int8":
        raise RuntimeChoiceError(
            where,
            "onnx-int8 runs an INT8 file: make it with 'cinet export --quantize int8' (calibrated and "
            "checked on real images) and pass it as --onnx",
        )
    return runtime


def resolve_runtime(
    runtime: str,
    device: torch.device,
    *,
    onnx_kind: str | None = None,
    features: Mapping[str, bool] | None = None,
    cuda_bf16: bool | None = None,
    where: str = "runtime",
) -> RuntimeChoice:
    """Turn ``runtime`` into the runtime that runs (``auto``: the table of the module docstring).

    Args:
        runtime: One of :data:`RUNTIMES`.
        device: Where the model runs (``cpu``, ``cuda``, ``cuda:1``, ...).
        onnx_kind: ``onnx-fp32`` / ``onnx-int8`` when the model is an ONNX file (its graph decides), None for a
            PyTorch model.
        features: The CPU's features (:func:`cinet.utils.precision.cpu_features`); given in tests to stand for
            another CPU.
        cuda_bf16: Whether the CUDA device runs bf16 natively; given in tests.
        where: The option or argument named in errors (``--runtime``).

    Raises:
        RuntimeChoiceError: (an :class:`~cinet.errors.InputError`) The refusals of :func:`check_runtime_source`;
            the other precision of an ONNX file.
    """
    check_runtime_source(runtime, onnx=onnx_kind is not None, where=where)
    if onnx_kind is not None:
        if runtime not in ("auto", onnx_kind):
            raise RuntimeChoiceError(where, f"{runtime} asked for, but the ONNX file is {onnx_kind}")
        return RuntimeChoice(onnx_kind, f"{onnx_kind} (the ONNX file's graph)")
    if runtime != "auto":
        return RuntimeChoice(runtime, f"{runtime} (asked for)")
    # the bf16 rule of training's precision: auto, in its one home
    from cinet.utils.precision import resolve_precision  # local: cinet --help loads this, not torch

    speedup = None
    if device.type == "cpu" and features is None:  # this machine: its flags, then its measured speed-up
        features, speedup = machine_cpu_features(), machine_bf16_speedup
    if device.type == "cuda" and cuda_bf16 is None:
        cuda_bf16 = machine_cuda_bf16(device)
    precision = resolve_precision(
        "auto", device.type, features=features, cuda_bf16=cuda_bf16, bf16_speedup=speedup
    )
    name = "eager-bf16" if precision.precision == "bf16-mixed" else "eager-fp32"
    return RuntimeChoice(name, precision.reason.replace(precision.precision, name, 1))


def machine_cpu_features() -> Mapping[str, bool]:
    """This CPU's features (:func:`cinet.utils.precision.cpu_features`), the probe ``auto`` reads (the test suite
    replaces it with a CPU without bf16 units so that every machine runs the same float32 reference)."""
    from cinet.utils.precision import cpu_features  # local: cinet --help loads this, not torch

    return cpu_features()


def machine_bf16_speedup() -> float:
    """This CPU's measured bf16 speed-up (:func:`cinet.utils.precision.cpu_bf16_speedup`), asked only where the
    flags show bf16 units (the test suite replaces it, as :func:`machine_cpu_features`)."""
    from cinet.utils.precision import cpu_bf16_speedup  # local: cinet --help loads this, not torch

    return cpu_bf16_speedup()


def machine_cuda_bf16(device: torch.device) -> bool:
    """Whether the CUDA ``device`` runs bf16 natively (:func:`cinet.utils.precision.cuda_runs_bf16`; the test
    suite replaces it, as :func:`machine_cpu_features`)."""
    from cinet.utils.precision import cuda_runs_bf16  # local: cinet --help loads this, not torch

    return cuda_runs_bf16(device)


@dataclass(frozen=True)
class Agreement:
    """How far a runtime's outputs are from eager float32's on the same batch.

    Attributes:
        depth_rel_diff: Mean of ``|d - d_ref| / d_ref`` over the pixels with ``d_ref > 0`` (a fraction).
        label_disagreement: Fraction of pixels whose arg-max class differs.
    """

    depth_rel_diff: float
    label_disagreement: float

    @property
    def accepted(self) -> bool:
        """Both within :data:`MAX_DEPTH_REL_DIFF` / :data:`MAX_LABEL_DISAGREEMENT` (NaN never passes)."""
        return bool(
            self.depth_rel_diff <= MAX_DEPTH_REL_DIFF and self.label_disagreement <= MAX_LABEL_DISAGREEMENT
        )


def agreement(
    depth: torch.Tensor, logits: torch.Tensor, ref_depth: torch.Tensor, ref_logits: torch.Tensor
) -> Agreement:
    """Compare a runtime's outputs with the reference (eager float32) on the same batch.

    Args:
        depth: Depth ``[B,1,H,W]`` in metres.
        logits: Segmentation logits ``[B,C,H,W]``.
        ref_depth: The reference depth, same shape.
        ref_logits: The reference logits, same shape.

    Returns:
        The mean relative depth difference and the label disagreement (:class:`Agreement`).
    """
    depth, ref_depth = depth.float(), ref_depth.float()
    valid = ref_depth > 0
    rel = (
        ((depth - ref_depth).abs()[valid] / ref_depth[valid]).mean() if valid.any() else depth.new_tensor(0.0)
    )
    labels_differ = (logits.float().argmax(1) != ref_logits.float().argmax(1)).float().mean()
    return Agreement(float(rel), float(labels_differ))
