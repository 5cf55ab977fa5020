"""ONNX export of CI-Net and an onnxruntime runner for exported files.

The exported graph is the network proper: input ``images`` float32 ``[B,3,H,W]`` (normalised with the dataset's
mean/std), outputs ``depth`` ``[B,1,H,W]`` (metres) and ``seg_logits`` ``[B,C,H,W]``. The SUM is exported with
its naive attention path (the N x N map is materialised; the memory-efficient kernels are not traceable).

Exporter: ``torch.onnx.export(..., dynamo=True)`` (torch.export + onnxscript) is tried first; if it fails, the
TorchScript exporter (``dynamo=False``) is used. The one that worked is stored in the metadata
(``cinet.exporter``). The file is checked with ``onnx.checker.check_model`` and carries the dataset description
(JSON of :class:`~cinet.data.DatasetInfo`) and the build arguments as ``metadata_props``, so
``cinet predict --onnx`` needs nothing else.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cinet.data.info import DatasetInfo
from cinet.errors import InputError, describe, first_line
from cinet.models.cinet import build_kwargs_of, require_joint
from cinet.models.sum import set_attention_impl
from cinet.utils.io import atomic_write_bytes

logger = logging.getLogger(__name__)

INPUT_NAME = "images"
OUTPUT_NAMES = ("depth", "seg_logits")
META_DATASET = "cinet.dataset"
META_MODEL = "cinet.model"
META_INPUT = "cinet.input"
META_EXPORTER = "cinet.exporter"
META_QUANTIZATION = "cinet.quantization"  # written by cinet.inference.quantize (INT8 files)


class ExportWrapper(nn.Module):
    """``images -> (depth, seg_logits)``: the tensors of :class:`CINetOutput` that inference needs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(images)
        return out.depth, out.seg_logits


def exportable_copy(model: nn.Module) -> nn.Module:
    """A CPU eval-mode copy of ``model`` with every ``attention_impl`` forced to ``naive`` (traceable)."""

    return set_attention_impl(copy.deepcopy(model).cpu().eval(), "naive")


def _export_dynamo(
    wrapper: nn.Module, sample: torch.Tensor, path: Path, dynamic: bool, opset: int | None
) -> None:
    kwargs: dict[str, Any] = {}
    if dynamic:
        dim = torch.export.Dim
        kwargs["dynamic_shapes"] = {
            INPUT_NAME: {0: dim("batch", min=1, max=1024), 2: dim.DYNAMIC, 3: dim.DYNAMIC}
        }
    if opset is not None:
        kwargs["opset_version"] = opset
    prog = torch.onnx.export(
        wrapper,
        (sample,),
        input_names=[INPUT_NAME],
        output_names=list(OUTPUT_NAMES),
        dynamo=True,
        external_data=False,
        verbose=False,
        **kwargs,
    )
    prog.save(str(path), external_data=False)


def _export_torchscript(
    wrapper: nn.Module, sample: torch.Tensor, path: Path, dynamic: bool, opset: int | None
) -> None:
    axes = None
    if dynamic:
        axes = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}}
        axes.update({name: {0: "batch", 2: "height", 3: "width"} for name in OUTPUT_NAMES})
    torch.onnx.export(
        wrapper,
        (sample,),
        str(path),
        input_names=[INPUT_NAME],
        output_names=list(OUTPUT_NAMES),
        dynamic_axes=axes,
        opset_version=opset or 17,
        dynamo=False,
    )


@contextlib.contextmanager
def _quiet_exporter_logs() -> Iterator[None]:
    """The dynamo exporter logs every optimisation pass at INFO: keep those loggers at WARNING meanwhile."""
    names = ("onnxscript", "onnx_ir", "torch.onnx", "torch.export", "torch._dynamo", "torch.fx")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.level, logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _info_dict(dataset_info: DatasetInfo | dict[str, Any] | None) -> dict[str, Any]:
    if dataset_info is None:
        return {}
    if dataclasses.is_dataclass(dataset_info):
        return dataclasses.asdict(dataset_info)
    return dict(dataset_info)


def save_checked_onnx(proto: Any, path: str | Path, metadata: dict[str, str]) -> None:
    """Set ``metadata`` in the model's ``metadata_props`` (other keys kept), check the model, write it atomically.

    Args:
        proto: An ``onnx.ModelProto`` (changed in place: metadata and ``producer_name = "cinet"``).
        path: Destination; replaced only once the whole file is written.
        metadata: ``{key: value}`` strings (``cinet.dataset``, ``cinet.model``, ``cinet.quantization``, ...).

    Raises:
        onnx.checker.ValidationError: The model is not valid ONNX (nothing is written).
    """
    import onnx

    kept = [p for p in proto.metadata_props if p.key not in metadata]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "cinet"
    onnx.checker.check_model(proto)
    atomic_write_bytes(path, proto.SerializeToString())


def written_opset(proto: Any) -> int | None:
    """The default-domain (``ai.onnx``) opset of an ONNX model proto, None when it imports none."""
    return next((int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    height: int,
    width: int,
    dynamic: bool = False,
    opset: int | None = None,
    dataset_info: DatasetInfo | dict[str, Any] | None = None,
    model_kwargs: dict[str, Any] | None = None,
    exporter: str = "auto",
    train_size: tuple[int, int] | None = None,
) -> Path:
    """Export a CI-Net to ONNX (checked, with the dataset description as metadata), written atomically.

    Args:
        model: The :class:`~cinet.models.CINet` (not modified: a CPU copy is exported).
        path: Destination ``.onnx`` file.
        height: Input height of the traced sample (the fixed input size unless ``dynamic``).
        width: Input width of the traced sample.
        dynamic: Batch, height and width are dynamic axes.
        opset: ONNX opset (default: the exporter's). An exporter that writes another opset (torch's dynamo exporter
            falls back to its own, >= 18, when it cannot convert) counts as failed: ``auto`` tries TorchScript.
        dataset_info: Stored as JSON metadata (``cinet.dataset``), needed by ``cinet predict --onnx``.
        model_kwargs: build_model arguments, stored as ``cinet.model`` (default: ``model.build_kwargs``).
        exporter: ``auto`` (dynamo, then TorchScript), ``dynamo`` or ``torchscript``.
        train_size: ``(H, W)`` the model was trained at, stored in ``cinet.input`` (``cinet predict --onnx``
            scales images far from it, as with the checkpoint).

    Returns:
        The path written.

    Raises:
        RuntimeError: No exporter could export the model (the errors of each are in the message).
        CinetError: A single-task baseline (``depth_only`` / ``seg_only``): both outputs are needed.
    """
    import onnx

    if exporter not in ("auto", "dynamo", "torchscript"):
        raise ValueError(f"exporter must be auto, dynamo or torchscript, got {exporter!r}")
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be positive, got height={height}, width={width}")
    path = Path(path)
    require_joint(model, str(path))
    wrapper = ExportWrapper(exportable_copy(model)).eval()
    batch = 2 if dynamic else 1  # a batch of 2 keeps torch.export from specialising the batch axis to 1
    sample = torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(0))
    tries = {"auto": ("dynamo", "torchscript"), "dynamo": ("dynamo",), "torchscript": ("torchscript",)}[
        exporter
    ]
    errors: list[str] = []
    used = None
    with tempfile.TemporaryDirectory(prefix="cinet-onnx-") as tmp:
        tmp_path = Path(tmp) / "model.onnx"
        for name in tries:
            try:
                with warnings.catch_warnings(), torch.no_grad(), _quiet_exporter_logs():
                    warnings.simplefilter("ignore")
                    fn = _export_dynamo if name == "dynamo" else _export_torchscript
                    fn(wrapper, sample, tmp_path, dynamic, opset)
                proto = onnx.load(str(tmp_path))  # read once: checked here, saved with metadata below
                written = written_opset(proto)
                if opset is not None and written != opset:  # the dynamo exporter falls back to its own opset
                    raise RuntimeError(f"wrote opset {written}, not the requested {opset}")
                used = name
                break
            except Exception as exc:  # try the next exporter
                errors.append(f"{name}: {describe(exc)}")
                logger.info("ONNX export with %s failed: %s", name, first_line(exc))
        if used is None:
            raise RuntimeError("ONNX export failed: " + " | ".join(errors))
    meta = {
        META_DATASET: json.dumps(_info_dict(dataset_info)),
        META_MODEL: json.dumps(model_kwargs if model_kwargs is not None else build_kwargs_of(model)),
        META_INPUT: json.dumps(
            {
                "height": height,
                "width": width,
                "dynamic": dynamic,
                "normalised": True,
                "layout": "NCHW",
                "train_size": list(train_size) if train_size is not None else None,
            }
        ),
        META_EXPORTER: used,
    }
    save_checked_onnx(proto, path, meta)
    logger.info(
        "exported %s with the %s exporter (%s)",
        path,
        used,
        "dynamic" if dynamic else f"{width}x{height} (WxH)",
    )
    return path


class OnnxRunner:
    """Run an exported CI-Net with onnxruntime: ``runner(images [B,3,H,W]) -> (depth, seg_logits)`` tensors.

    Attributes:
        dataset_info: :class:`DatasetInfo` from the file's metadata.
        model_kwargs: build_model arguments from the metadata (may be empty).
        fixed_size: ``(H, W)`` of a fixed-size export, None when height and width are dynamic.
        fixed_batch: Batch size of a fixed-batch export, None when dynamic.
        train_size: ``(H, W)`` the model was trained at (``cinet.input`` metadata), None when not stored.
        exporter: ``dynamo`` or ``torchscript``.
        kind: ``onnx-int8`` for a file quantized by ``cinet export --quantize int8`` (its ``cinet.quantization``
            metadata), else ``onnx-fp32`` (:mod:`cinet.inference.runtime`).
    """

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"{self.path}: no such ONNX file")
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=providers)
        except Exception as exc:
            raise InputError(f"{self.path}: not a loadable ONNX model ({first_line(exc)})") from exc
        meta = self.session.get_modelmeta().custom_metadata_map
        if META_DATASET not in meta or not json.loads(meta[META_DATASET] or "{}"):
            raise InputError(f"{self.path}: no '{META_DATASET}' metadata; export it with 'cinet export'")
        self.dataset_info = DatasetInfo.from_dict(json.loads(meta[META_DATASET]))
        self.model_kwargs = json.loads(meta.get(META_MODEL, "{}") or "{}")
        self.exporter = meta.get(META_EXPORTER, "?")
        self.kind = "onnx-int8" if META_QUANTIZATION in meta else "onnx-fp32"
        train_size = (json.loads(meta.get(META_INPUT, "{}") or "{}") or {}).get("train_size")
        self.train_size = (int(train_size[0]), int(train_size[1])) if train_size else None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        shape = list(inp.shape)
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        hw = shape[2:4]
        self.fixed_size = (hw[0], hw[1]) if all(isinstance(s, int) for s in hw) else None
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run_numpy(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``[B,3,H,W]`` float32 -> ``(depth, seg_logits)`` numpy arrays (split by a fixed batch size)."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        step = self.fixed_batch or len(images)
        depths, logits = [], []
        for i in range(0, len(images), step):
            d, s = self.session.run(self.output_names[:2], {self.input_name: images[i : i + step]})
            depths.append(d)
            logits.append(s)
        return np.concatenate(depths), np.concatenate(logits)

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        depth, logits = self.run_numpy(images.detach().cpu().numpy())
        return torch.from_numpy(depth).to(images.device), torch.from_numpy(logits).to(images.device)


def onnx_parity(
    model: nn.Module, path: str | Path, *, height: int, width: int, batch: int = 1, seed: int = 0
) -> float:
    """Largest absolute difference between PyTorch and onnxruntime outputs (depth and logits) on a sample.

    Args:
        model: The PyTorch model that was exported.
        path: The ONNX file.
        height: Sample height (must equal the export size for fixed-size files).
        width: Sample width.
        batch: Sample batch size.
        seed: Seed of the random (standard normal, i.e. normalised-image-like) sample.
    """
    sample = torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))
    ref = exportable_copy(model)
    with torch.inference_mode():
        out = ref(sample)
    depth, logits = OnnxRunner(path).run_numpy(sample.numpy())
    diffs = np.concatenate(
        [np.abs(depth - out.depth.numpy()).ravel(), np.abs(logits - out.seg_logits.numpy()).ravel()]
    )
    return float(diffs.max()) if np.isfinite(diffs).all() else float("inf")  # NaN / inf never passes
