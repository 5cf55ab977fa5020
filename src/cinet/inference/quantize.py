"""Static INT8 quantization of an exported CI-Net with onnxruntime, and its accuracy check.

A float32 file written by :func:`cinet.inference.export.export_onnx` is quantized with
``onnxruntime.quantization.quantize_static``: QDQ format (``QuantizeLinear``/``DequantizeLinear`` pairs
around the quantized operators, which onnxruntime's CPU provider fuses into integer kernels), weights int8
symmetric **per output channel**, activations uint8 asymmetric per tensor (the pairing onnxruntime
recommends for x86 CPUs with VNNI), ranges from MinMax calibration on real inputs. ``quant_pre_process``
(shape inference and graph optimisation) runs first, as onnxruntime advises.

Some parts of the network may stay in float32 (:data:`FLOAT_GROUPS`); which ones is chosen by measurement
on a trained model (:data:`DEFAULT_KEEP_FLOAT`, numbers in ``docs/performance.md``).

The accuracy check (:func:`compare_accuracy`, :func:`check_accuracy`) runs the float32 and the INT8 file on
held-out images of the checkpoint's dataset (never the calibration images) and compares the paper's depth
metrics and mIoU (:mod:`cinet.metrics`); a drop past the thresholds raises
:class:`QuantizationAccuracyError` (a :class:`~cinet.errors.CinetError`: one line, exit code 2).

The INT8 file keeps the float file's ``cinet.*`` metadata and adds ``cinet.quantization`` (JSON: method,
float groups, calibration), so ``cinet predict --onnx`` and :meth:`cinet.Predictor.from_onnx` run it
unchanged.

Reference: onnxruntime, "Quantize ONNX models" (static quantization, QDQ format, per-channel weights).
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cinet.errors import CinetError, InputError

logger = logging.getLogger(__name__)

META_QUANTIZATION = "cinet.quantization"

#: Parts of the exported graph that can be kept in float32, found by structure (names differ per exporter).
FLOAT_GROUPS: dict[str, str] = {
    "attention": "the SUM (Eq. 1-2): Q, K, V 1x1 convs, MatMul Q K^T, Sigmoid, MatMul A~ V, 1/N scale, reshapes",
    "depth_head": "the depth head's 3x3 conv (its softplus + min depth stay float anyway)",
    "seg_head": "the segmentation head's 3x3 conv",
    "stem": "the encoder's first 7x7 conv (on the normalised image)",
}

#: Kept in float32 by default: chosen by measurement on the trained demo model (docs/performance.md,
#: "INT8: which layers stay float").
DEFAULT_KEEP_FLOAT: tuple[str, ...] = ("attention",)

#: ``--max-delta1-drop`` default: δ1 is a fraction in [0, 1].
DEFAULT_MAX_DELTA1_DROP = 0.01
#: ``--max-miou-drop`` default, in mIoU points (percent).
DEFAULT_MAX_MIOU_DROP = 1.0


class QuantizationAccuracyError(CinetError):
    """The INT8 model loses more accuracy than allowed (δ1 or mIoU drop past the threshold)."""


# --------------------------------------------------------------------------------------------- graph groups


def _producers(proto: Any) -> dict[str, Any]:
    return {out: node for node in proto.graph.node for out in node.output}


def _head_convs(proto: Any, output: str) -> list[str]:
    """Walk back from graph output ``output`` through single-input float ops to the first Conv (inclusive)."""
    producers = _producers(proto)
    initializers = {t.name for t in proto.graph.initializer}
    names: list[str] = []
    frontier = [output]
    seen: set[str] = set()
    while frontier:
        tensor = frontier.pop()
        node = producers.get(tensor)
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type == "Conv":
            names.append(node.name)
            continue
        if node.op_type in ("Constant",):
            continue
        frontier.extend(i for i in node.input if i and i not in initializers)
    return names


_ATTENTION_GLUE = {"Sigmoid", "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Mul", "Div"}


def _attention_nodes(proto: Any) -> list[str]:
    """The SUM's attention: its MatMuls (only the SUM has any), the Sigmoid / reshape / scale nodes around
    them up to the residual Add, and the Q, K, V 1x1 convs. The convs must stay float too: onnxruntime
    moves a quantized conv output's DequantizeLinear through the reshapes and fuses it with the MatMul
    into an integer ``MatMulIntegerToFloat``."""
    producers = _producers(proto)
    consumers: dict[str, list[Any]] = {}
    for node in proto.graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    found: dict[str, None] = {}
    stack = [n for n in proto.graph.node if n.op_type == "MatMul"]
    while stack:
        node = stack.pop()
        if node.name in found:
            continue
        found[node.name] = None
        if node.op_type == "Conv":  # the Q, K, V 1x1 convs: kept, not walked past
            continue
        near = [producers[i] for i in node.input if i in producers]
        near += [c for o in node.output for c in consumers.get(o, [])]
        stack.extend(n for n in near if n.op_type in _ATTENTION_GLUE or n.op_type in ("MatMul", "Conv"))
    return list(found)


def float_group_nodes(proto: Any, groups: Iterable[str]) -> dict[str, list[str]]:
    """Names of the graph nodes of each float group.

    Args:
        proto: The float32 ``onnx.ModelProto`` (after ``quant_pre_process``).
        groups: Keys of :data:`FLOAT_GROUPS`.

    Returns:
        ``{group: [node names]}`` (an empty list where the model has no such part, e.g. ``attention``
        of a variant without SUM).

    Raises:
        ValueError: An unknown group name.
    """
    out: dict[str, list[str]] = {}
    nodes = list(proto.graph.node)
    for group in groups:
        if group not in FLOAT_GROUPS:
            raise ValueError(f"unknown float group {group!r}; choose from {', '.join(FLOAT_GROUPS)}")
        if group == "attention":
            out[group] = _attention_nodes(proto)
        elif group == "depth_head":
            out[group] = _head_convs(proto, "depth")
        elif group == "seg_head":
            out[group] = _head_convs(proto, "seg_logits")
        else:  # stem: the first Conv fed by the graph input
            image = proto.graph.input[0].name
            out[group] = [n.name for n in nodes if n.op_type == "Conv" and image in n.input][:1]
    return out


def parse_keep_float(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"attention,depth_head"`` / ``"none"`` / None (default) -> a tuple of :data:`FLOAT_GROUPS` keys.

    Raises:
        InputError: An unknown group (one line naming ``--keep-float`` and the choices).
    """
    if text is None:
        return DEFAULT_KEEP_FLOAT
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    if items in ([], ["none"]):
        return ()
    bad = [t for t in items if t not in FLOAT_GROUPS]
    if bad:
        raise InputError(
            f"--keep-float: unknown group {bad[0]!r}; choose from none, {', '.join(FLOAT_GROUPS)}"
        )
    return tuple(dict.fromkeys(items))


# --------------------------------------------------------------------------------------------- quantization


def _calibration_reader(inputs: Iterable[np.ndarray], input_name: str) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        """Feeds ``{input_name: [1,3,H,W] float32}`` one calibration image at a time."""

        def __init__(self) -> None:
            self._it = iter(inputs)
            self.count = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            if x is None:
                return None
            self.count += 1
            return {input_name: np.ascontiguousarray(x, dtype=np.float32)}

    return _Reader()


def quantize_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    calibration: Iterable[np.ndarray],
    *,
    keep_float: Sequence[str] = DEFAULT_KEEP_FLOAT,
    per_channel: bool = True,
    calibration_source: str = "",
    preprocess: bool = True,
) -> dict[str, Any]:
    """Static INT8 quantization (QDQ, per-channel int8 weights, uint8 activations) of an exported CI-Net.

    Args:
        fp32_path: A float32 ONNX file written by :func:`~cinet.inference.export.export_onnx`.
        out_path: Destination of the INT8 file (written atomically; nothing is written on error).
        calibration: Normalised network inputs ``[B,3,H,W]`` float32 (the size the file accepts), the
            images whose activation ranges (MinMax) set the quantization scales.
        keep_float: :data:`FLOAT_GROUPS` that stay float32.
        per_channel: One weight scale per output channel (the default; per tensor when False).
        calibration_source: Where the calibration images came from (stored in the metadata).
        preprocess: Run ``quant_pre_process`` (shape inference + optimisation) first.

    Returns:
        The ``cinet.quantization`` metadata written into the file (dict).

    Raises:
        InputError: No calibration input was given.
    """
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from cinet.inference.export import save_checked_onnx

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    source = onnx.load(str(fp32_path))
    input_name = source.graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="cinet-int8-") as tmp:
        model_in = fp32_path
        if preprocess:
            model_in = Path(tmp) / "pre.onnx"
            quant_pre_process(str(fp32_path), str(model_in), skip_symbolic_shape=True)
        pre = onnx.load(str(model_in))
        groups = float_group_nodes(pre, keep_float)
        exclude = sorted({n for names in groups.values() for n in names})
        del pre
        reader = _calibration_reader(calibration, input_name)
        quantized = Path(tmp) / "int8.onnx"
        try:
            quantize_static(
                str(model_in),
                str(quantized),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=exclude,
                calibrate_method=_minmax(),
            )
        except ValueError as exc:
            if reader.count == 0:
                raise InputError(f"{fp32_path}: no calibration images to quantize with") from exc
            raise
        proto = onnx.load(str(quantized))
    info = {
        "method": "onnxruntime quantize_static, QDQ, MinMax calibration",
        "weights": "int8 symmetric, " + ("per output channel" if per_channel else "per tensor"),
        "activations": "uint8 asymmetric, per tensor",
        "keep_float": list(keep_float),
        "float_nodes": {g: len(n) for g, n in groups.items()},
        "calibration": {"source": calibration_source, "images": reader.count},
        "onnxruntime": ort.__version__,
    }
    meta = {p.key: p.value for p in source.metadata_props}
    meta[META_QUANTIZATION] = json.dumps(info)
    del proto.metadata_props[:]  # the float file's metadata, not whatever the quantizer left
    save_checked_onnx(proto, out_path, meta)
    logger.info("quantized %s -> %s (%d calibration images)", fp32_path, out_path, reader.count)
    return info


def _minmax() -> Any:
    from onnxruntime.quantization import CalibrationMethod

    return CalibrationMethod.MinMax


# --------------------------------------------------------------------------------------------- inputs


def fit_input(
    image: Any, size: tuple[int, int] | None, train_size: tuple[int, int] | None = None
) -> tuple[Any, Any]:
    """A normalised batch ``[B,3,H,W]`` (torch) fitted to the network as ``cinet eval`` and ``predict`` fit it.

    The one preprocessing policy of :mod:`cinet.inference.preprocess`: resized to ``size`` when given (a
    fixed-size ONNX file, ``data.eval_size``), else scaled to ``train_size`` when far from it, then padded to a
    multiple of the output stride.

    Returns:
        ``(network input [B,3,Hp,Wp], geometry)``; ``geometry.restore`` maps outputs back to ``H x W``.
    """
    from cinet.inference.preprocess import plan_geometry, to_network

    h, w = (int(v) for v in image.shape[-2:])
    geometry = plan_geometry(h, w, input_size=size, train_size=train_size)
    return to_network(image, geometry), geometry


def spread_indices(length: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``range(length)`` (all of them when ``count >= length``)."""
    if count >= length:
        return list(range(length))
    return sorted({int(i) for i in np.linspace(0, length - 1, count).round()})


def dataset_inputs(
    dataset: Any, count: int, size: tuple[int, int] | None, train_size: tuple[int, int] | None = None
) -> Iterator[np.ndarray]:
    """Network inputs ``[1,3,Hp,Wp]`` float32 of ``count`` samples spread over ``dataset`` (eval transform),
    fitted by :func:`fit_input`."""
    for i in spread_indices(len(dataset), count):
        image = dataset[i]["image"].unsqueeze(0).float()
        yield fit_input(image, size, train_size)[0].numpy()


def folder_inputs(
    folder: str | Path, count: int, prepare: Callable[[Path], Any]
) -> tuple[list[Path], Iterator[np.ndarray]]:
    """The images of a folder (sorted, ``count`` spread over them) as network inputs.

    Args:
        folder: A folder of images (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.tif``, ``.tiff``, ``.webp``).
        count: How many to use.
        prepare: ``path -> normalised [3,H,W]`` tensor, e.g. :meth:`cinet.Predictor.prepare` (its ``[1]``).

    Raises:
        InputError: The folder has no image.
    """
    exts = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts)
    if not files:
        raise InputError(f"{folder}: no images (.png/.jpg/...) to calibrate with")
    chosen = [files[i] for i in spread_indices(len(files), count)]

    def gen() -> Iterator[np.ndarray]:
        for path in chosen:
            yield prepare(path).unsqueeze(0).cpu().numpy()

    return chosen, gen()


# --------------------------------------------------------------------------------------------- accuracy


def compare_accuracy(
    runners: dict[str, Callable[[Any], tuple[Any, Any]]],
    samples: Iterable[dict[str, Any]],
    *,
    num_classes: int,
    protocol: Any,
    input_size: tuple[int, int] | None = None,
    train_size: tuple[int, int] | None = None,
) -> dict[str, dict[str, Any]]:
    """Depth metrics and mIoU of several runners on the same labelled samples.

    Args:
        runners: ``name -> runner``; a runner maps a normalised batch ``[1,3,h,w]`` (torch) to
            ``(depth [1,1,h,w] metres, seg_logits [1,C,h,w])`` (e.g. :class:`~cinet.inference.export.OnnxRunner`).
        samples: Dataset samples with ``image`` ``[3,H,W]`` (normalised), ``depth`` ``[1,H,W]`` or ``[H,W]``
            (metres, 0 = invalid) and ``labels`` ``[H,W]``.
        num_classes: Segmentation classes.
        protocol: The :class:`~cinet.metrics.EvalProtocol` (crop, depth range, reduction, ignore label).
        input_size: Fixed network input size (a fixed-size ONNX file, or ``data.eval_size``).
        train_size: ``(H, W)`` the model was trained at (the checkpoint's). Inputs are fitted and outputs
            restored to the ground truth by :func:`fit_input`, exactly as ``cinet eval`` does, so the float32
            row equals ``cinet eval`` of the same checkpoint.

    Returns:
        ``name -> metrics`` (δ1-3, rms, rms log, abs rel, sq rel, pixel_acc, miou as fractions, num_images).
    """
    import torch

    from cinet.metrics import DepthMetrics, SegMetrics

    depth_m = {n: DepthMetrics(reduction=protocol.reduction, **protocol.depth_kwargs()) for n in runners}
    seg_m = {n: SegMetrics(num_classes, ignore_index=protocol.ignore_index) for n in runners}
    count = 0
    for sample in samples:
        image = sample["image"].unsqueeze(0).float()
        gt_depth = sample["depth"].reshape(1, 1, *sample["depth"].shape[-2:]).float()
        labels = sample["labels"].reshape(1, *sample["labels"].shape[-2:]).long()
        x, geometry = fit_input(image, input_size, train_size)
        for name, run in runners.items():
            with torch.inference_mode():
                depth, logits = run(x)
            depth, logits = geometry.restore(depth.float()), geometry.restore(logits.float())
            depth_m[name].update(depth, gt_depth)
            seg_m[name].update(logits.argmax(1), labels)
        count += 1
    if count == 0:
        raise InputError("no held-out images to check the accuracy on")
    out: dict[str, dict[str, Any]] = {}
    for name in runners:
        metrics: dict[str, Any] = {}
        for src in (depth_m[name].compute(), seg_m[name].compute()):
            for k, v in src.items():
                if isinstance(v, torch.Tensor):
                    v = v.tolist() if v.ndim else float(v)
                metrics[k] = v
        metrics["num_images"] = count
        out[name] = metrics
    return out


def accuracy_report(
    fp32: dict[str, Any],
    int8: dict[str, Any],
    *,
    max_delta1_drop: float = DEFAULT_MAX_DELTA1_DROP,
    max_miou_drop: float = DEFAULT_MAX_MIOU_DROP,
) -> dict[str, Any]:
    """The INT8-vs-float32 report: both metric sets, their differences and the verdict.

    Args:
        fp32: Metrics of the float32 model (:func:`compare_accuracy`).
        int8: Metrics of the INT8 model.
        max_delta1_drop: Largest allowed ``δ1(fp32) - δ1(int8)`` (δ1 as a fraction, 0.01 = 1 point).
        max_miou_drop: Largest allowed ``mIoU(fp32) - mIoU(int8)`` in points (percent; 1.0 = 0.01).

    Returns:
        ``{"fp32", "int8", "difference" (int8 - fp32 per metric), "delta1_drop", "miou_drop_points",
        "max_delta1_drop", "max_miou_drop_points", "accepted", "reasons"}``. A NaN metric (no valid pixel)
        counts as a failed check.
    """
    from cinet.metrics import METRIC_KEYS

    diff = {
        k: float(int8[k]) - float(fp32[k])
        for k in METRIC_KEYS
        if isinstance(fp32.get(k), float | int) and isinstance(int8.get(k), float | int)
    }
    delta1_drop = float(fp32.get("delta1", math.nan)) - float(int8.get("delta1", math.nan))
    miou_drop = 100.0 * (float(fp32.get("miou", math.nan)) - float(int8.get("miou", math.nan)))
    reasons = []
    if not delta1_drop <= max_delta1_drop:  # NaN fails too
        reasons.append(f"δ1 drops by {delta1_drop:.4f} (> --max-delta1-drop {max_delta1_drop:g})")
    if not miou_drop <= max_miou_drop:
        reasons.append(f"mIoU drops by {miou_drop:.2f} points (> --max-miou-drop {max_miou_drop:g})")
    return {
        "fp32": fp32,
        "int8": int8,
        "difference": diff,
        "delta1_drop": delta1_drop,
        "miou_drop_points": miou_drop,
        "max_delta1_drop": max_delta1_drop,
        "max_miou_drop_points": max_miou_drop,
        "accepted": not reasons,
        "reasons": reasons,
    }


def check_accuracy(report: dict[str, Any], what: str) -> None:
    """Raise :class:`QuantizationAccuracyError` (one line starting with ``what``) when the report refuses."""
    if not report["accepted"]:
        raise QuantizationAccuracyError(f"{what}: INT8 model refused: " + "; ".join(report["reasons"]))


def format_report(report: dict[str, Any], protocol: Any = None) -> str:
    """The float32 and INT8 metrics as a markdown table (with the protocol line) plus the two drops."""
    from cinet.metrics import format_table

    table = format_table({"float32": report["fp32"], "int8": report["int8"]}, protocol)
    return (
        table + f"δ1 drop {report['delta1_drop']:+.4f} (max {report['max_delta1_drop']:g}), "
        f"mIoU drop {report['miou_drop_points']:+.2f} points (max {report['max_miou_drop_points']:g})"
    )


# --------------------------------------------------------------------------------------------- export pipeline


def int8_paths(onnx_path: str | Path) -> tuple[Path, Path]:
    """``m.onnx`` -> ``(m.int8.onnx, m.int8.accuracy.json)``: the INT8 file and its accuracy report."""
    p = Path(onnx_path)
    stem = p.name[: -len(".onnx")] if p.name.endswith(".onnx") else p.name
    return p.with_name(stem + ".int8.onnx"), p.with_name(stem + ".int8.accuracy.json")


def checkpoint_config(
    payload: dict[str, Any], checkpoint: str | Path, config: str | Path | None = None
) -> Any:
    """The run config stored in a checkpoint (``config`` YAML applied over it): names the dataset.

    Raises:
        InputError: The checkpoint stores no config and none is given.
        ConfigError: A bad config file or key.
    """
    from cinet.config import load_config

    stored = payload.get("config") or None
    if stored is None and config is None:
        raise InputError(
            f"{checkpoint}: no stored run config naming its dataset; give --config with a 'data:' section "
            "(calibration and held-out images come from it)"
        )
    return load_config(config, [], base=stored)


def calibration_plan(cfg: Any, calibration: str | None, eval_split: str | None) -> tuple[str, bool, str]:
    """``(calibration source, is a folder, held-out split)`` with the defaults of ``cfg`` filled in.

    Raises:
        InputError: The calibration source is neither a folder nor a split, or is the held-out split.
    """
    eval_split = eval_split or cfg.data.test_split
    calib = calibration or cfg.data.train_split
    is_folder = Path(calib).is_dir()
    if not is_folder and calib not in ("train", "val", "test"):
        raise InputError(
            f"--calibration-images: {calib!r} is neither a folder nor a split (train, val, test)"
        )
    if not is_folder and calib == eval_split:
        raise InputError(
            f"--calibration-images: split {calib!r} is also the held-out evaluation split; "
            "calibrate on another split or a folder"
        )
    return calib, is_folder, eval_split


def shared_images(a: Any, b: Any) -> int:
    """How many image files two datasets share (0 when a dataset does not list its files).

    Reads the ``items`` of a :class:`cinet.data.folder.FolderDataset` (``(stem, image path)`` pairs); other
    datasets have disjoint official splits.
    """

    def files(ds: Any) -> set[str]:
        base = getattr(ds, "dataset", ds)  # CachedDataset wraps the dataset
        return {str(p) for _, p in getattr(base, "items", None) or []}

    return len(files(a) & files(b))


def export_int8(
    fp32_path: str | Path,
    int8_path: str | Path,
    *,
    cfg: Any,
    model_kwargs: dict[str, Any],
    normalization: tuple[Sequence[float], Sequence[float]],
    train_size: tuple[int, int] | None = None,
    calibration: str | None = None,
    num_calib: int = 16,
    eval_split: str | None = None,
    num_eval: int = 50,
    keep_float: Sequence[str] = DEFAULT_KEEP_FLOAT,
    max_delta1_drop: float = DEFAULT_MAX_DELTA1_DROP,
    max_miou_drop: float = DEFAULT_MAX_MIOU_DROP,
) -> tuple[dict[str, Any], Any]:
    """Quantize ``fp32_path`` to ``int8_path`` and measure both on held-out images of the dataset of ``cfg``.

    Args:
        fp32_path: The float32 export.
        int8_path: Where the INT8 file is written (the caller moves it into place once accepted).
        cfg: The run config (:func:`checkpoint_config`): dataset, splits and evaluation protocol.
        model_kwargs: build_model arguments of the exported model (its class count is checked).
        normalization: ``(mean, std)`` the model was trained with (:func:`cinet.checkpoint.input_normalization`):
            calibration and held-out images are normalised with it, as ``cinet eval`` and ``predict`` do.
        train_size: ``(H, W)`` the model was trained at (:func:`cinet.inference.preprocess.training_size_of`):
            images are fitted to the network by the policy of ``cinet eval`` (:func:`fit_input`).
        calibration: A folder of images, or a split of the dataset (default: ``data.train_split``).
        num_calib: Calibration images (spread evenly over the folder / split).
        eval_split: Held-out split with ground truth (default: ``data.test_split``); must differ from a
            calibration split.
        num_eval: Held-out images (spread evenly over the split).
        keep_float: :data:`FLOAT_GROUPS` kept in float32.
        max_delta1_drop: See :func:`accuracy_report`.
        max_miou_drop: See :func:`accuracy_report` (points).

    Returns:
        ``(report, protocol)``: the :func:`accuracy_report` dict plus ``quantization``, ``calibration`` and
        ``evaluation`` entries, and the :class:`~cinet.metrics.EvalProtocol` used.

    Raises:
        InputError: Bad calibration source or counts, the same split for calibration and evaluation.
        CheckpointError: The model's class count differs from the dataset's.
        ConfigError / DataError: The dataset cannot be built.
    """
    from cinet.build.builders import build_protocol
    from cinet.build.data import build_dataset
    from cinet.errors import CheckpointError
    from cinet.inference.export import OnnxRunner

    if num_calib < 1:
        raise InputError(f"--num-calib: need at least 1 calibration image, got {num_calib}")
    if num_eval < 1:
        raise InputError(f"--num-eval: need at least 1 held-out image, got {num_eval}")
    calib, is_folder, eval_split = calibration_plan(cfg, calibration, eval_split)
    fp32 = OnnxRunner(fp32_path)
    mean, std = (tuple(float(v) for v in x) for x in normalization)
    eval_size = tuple(cfg.data.eval_size) if cfg.data.eval_size else None
    input_size = fp32.fixed_size or eval_size  # as cinet eval: data.eval_size, else the training-size rule
    eval_ds = build_dataset(cfg.data, eval_split, train=False, mean=mean, std=std)
    info = eval_ds.info
    classes = int(model_kwargs.get("num_classes", info.num_classes))
    if classes != info.num_classes:
        raise CheckpointError(
            f"{fp32_path}: model has {classes} classes, dataset {cfg.data.name!r} has {info.num_classes}"
        )
    if is_folder:
        from cinet.inference.predictor import Predictor

        predictor = Predictor.from_onnx(fp32_path)
        files, inputs = folder_inputs(calib, num_calib, lambda p: predictor.prepare(p)[1])
        source = f"folder {calib} ({len(files)} images)"
    else:
        calib_ds = build_dataset(cfg.data, calib, train=False, mean=mean, std=std)
        inputs = dataset_inputs(calib_ds, num_calib, input_size, train_size)
        source = f"{cfg.data.name}/{calib} ({min(num_calib, len(calib_ds))} of {len(calib_ds)} images)"
        shared = shared_images(calib_ds, eval_ds)
        if shared:  # e.g. a folder dataset without split lists: every split is every image
            source += f"; {shared} of them also in the held-out split {eval_split!r}"
            logging.getLogger(__name__).warning(
                "%s/%s and %s/%s share %d images (no split lists?): the INT8 accuracy is checked on images it "
                "was calibrated on; give --calibration-images DIR (other photos) or write train.txt / test.txt",
                cfg.data.name,
                calib,
                cfg.data.name,
                eval_split,
                shared,
            )
    quant = quantize_int8(fp32_path, int8_path, inputs, keep_float=keep_float, calibration_source=source)
    int8 = OnnxRunner(int8_path)
    protocol = build_protocol(cfg, info)
    indices = spread_indices(len(eval_ds), num_eval)
    metrics = compare_accuracy(
        {"fp32": fp32, "int8": int8},
        (eval_ds[i] for i in indices),
        num_classes=info.num_classes,
        protocol=protocol,
        input_size=input_size,
        train_size=train_size,
    )
    report = accuracy_report(
        metrics["fp32"], metrics["int8"], max_delta1_drop=max_delta1_drop, max_miou_drop=max_miou_drop
    )
    report["quantization"] = quant
    report["calibration"] = source
    report["evaluation"] = {"split": f"{cfg.data.name}/{eval_split}", "images": len(indices)}
    report["protocol"] = protocol.to_dict()
    return report, protocol


def report_json(report: dict[str, Any]) -> dict[str, Any]:
    """The report with NaN/inf as null (strict JSON; a class absent from a set has a NaN IoU)."""

    def clean(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v

    return clean(report)


def install_int8_outputs(fp32_tmp: Path, int8_tmp: Path, report: dict[str, Any], out: str | Path) -> None:
    """Move an accepted export into place: ``out`` (float32), its INT8 file and the JSON report (:func:`int8_paths`).

    Each file is written atomically (temporary file + rename), so an existing file is either kept whole or
    replaced whole.
    """
    from cinet.utils.io import atomic_write_bytes, atomic_write_json

    int8_out, report_out = int8_paths(out)
    for src, dst in ((fp32_tmp, Path(out)), (int8_tmp, int8_out)):
        atomic_write_bytes(dst, Path(src).read_bytes())
    atomic_write_json(report_out, report_json(report))
