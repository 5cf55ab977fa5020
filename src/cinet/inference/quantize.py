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
import torch

from cinet.errors import CheckpointError, CinetError, InputError
from cinet.inference import IMAGE_EXTENSIONS
from cinet.inference.export import META_QUANTIZATION, OnnxRunner, save_checked_onnx
from cinet.inference.predictor import Predictor
from cinet.metrics import METRIC_KEYS, DepthMetrics, SegMetrics, format_table
from cinet.preprocess import InputSpec, fit
from cinet.utils.io import atomic_write_bytes, atomic_write_json

logger = logging.getLogger(__name__)


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


def spread_indices(length: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``range(length)`` (all of them when ``count >= length``)."""
    if count >= length:
        return list(range(length))
    return sorted({int(i) for i in np.linspace(0, length - 1, count).round()})


def dataset_inputs(
    dataset: Any, count: int, size: tuple[int, int] | None, train_size: tuple[int, int] | None = None
) -> Iterator[np.ndarray]:
    """Network inputs ``[1,3,Hp,Wp]`` float32 of ``count`` samples spread over ``dataset`` (eval transform),
    fitted as ``cinet eval`` fits them (:func:`cinet.preprocess.fit`)."""

    for i in spread_indices(len(dataset), count):
        image = dataset[i]["image"].unsqueeze(0).float()
        yield fit(image, input_size=size, train_size=train_size)[0].numpy()


def folder_inputs(
    folder: str | Path, count: int, prepare: Callable[[Path], Any]
) -> tuple[list[Path], Iterator[np.ndarray]]:
    """The images of a folder (sorted, ``count`` spread over them) as network inputs.

    Args:
        folder: A folder of images (:data:`cinet.inference.IMAGE_EXTENSIONS`, as ``cinet predict`` reads folders).
        count: How many to use.
        prepare: ``path -> normalised [3,H,W]`` tensor, e.g. :meth:`cinet.Predictor.prepare` (its ``[1]``).

    Raises:
        InputError: The folder has no image.
    """

    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
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
            restored to the ground truth by :func:`cinet.preprocess.fit`, exactly as ``cinet eval`` does, so
            the float32 row equals ``cinet eval`` of the same checkpoint.

    Returns:
        ``name -> metrics`` (δ1-3, rms, rms log, abs rel, sq rel, pixel_acc, miou as fractions, num_images).
    """

    depth_m = {n: DepthMetrics(reduction=protocol.reduction, **protocol.depth_kwargs()) for n in runners}
    seg_m = {n: SegMetrics(num_classes, ignore_index=protocol.ignore_index) for n in runners}
    count = 0
    for sample in samples:
        image = sample["image"].unsqueeze(0).float()
        gt_depth = sample["depth"].reshape(1, 1, *sample["depth"].shape[-2:]).float()
        labels = sample["labels"].reshape(1, *sample["labels"].shape[-2:]).long()
        x, geometry = fit(image, input_size=input_size, train_size=train_size)
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
    num_classes: int,
    spec: InputSpec,
    calibration: Any,
    held_out: Any,
    protocol: Any,
    calibration_name: str,
    held_out_name: str,
    num_calib: int = 16,
    num_eval: int = 50,
    keep_float: Sequence[str] = DEFAULT_KEEP_FLOAT,
    max_delta1_drop: float = DEFAULT_MAX_DELTA1_DROP,
    max_miou_drop: float = DEFAULT_MAX_MIOU_DROP,
) -> dict[str, Any]:
    """Quantize ``fp32_path`` to ``int8_path`` and measure both on held-out images.

    The data come from the caller (``cinet export`` builds them through the build layer, normalised with
    ``spec``'s mean/std, the checkpoint's): inputs are fitted to the network by the policy of ``cinet eval``
    (:func:`cinet.preprocess.fit`: a fixed-size file's size, else ``spec.eval_size``, else the training-size
    rule of ``spec.train_size``).

    Args:
        fp32_path: The float32 export.
        int8_path: Where the INT8 file is written (the caller moves it into place once accepted).
        num_classes: Segmentation classes of the exported model (checked against ``held_out``'s).
        spec: The model's :class:`cinet.preprocess.InputSpec` (from its checkpoint).
        calibration: A folder of images (:class:`~pathlib.Path`; read as ``cinet predict --onnx`` reads them),
            or a dataset (eval transform, normalised with ``spec``).
        held_out: A dataset with ground truth, never the calibration images (normalised with ``spec``).
        protocol: The :class:`~cinet.metrics.EvalProtocol` of ``held_out``.
        calibration_name: What the report calls the calibration data (``synthetic/train``, a folder).
        held_out_name: What the report calls the held-out split (``synthetic/test``).
        num_calib: Calibration images (spread evenly over the folder / dataset).
        num_eval: Held-out images (spread evenly over the dataset).
        keep_float: :data:`FLOAT_GROUPS` kept in float32.
        max_delta1_drop: See :func:`accuracy_report`.
        max_miou_drop: See :func:`accuracy_report` (points).

    Returns:
        The :func:`accuracy_report` dict plus ``quantization``, ``calibration``, ``evaluation`` and ``protocol``
        entries.

    Raises:
        InputError: Bad counts, a folder without images.
        CheckpointError: The model's class count differs from the dataset's.
    """

    if num_calib < 1:
        raise InputError(f"--num-calib: need at least 1 calibration image, got {num_calib}")
    if num_eval < 1:
        raise InputError(f"--num-eval: need at least 1 held-out image, got {num_eval}")
    fp32 = OnnxRunner(fp32_path)
    input_size = (
        fp32.fixed_size or spec.eval_size
    )  # as cinet eval: data.eval_size, else the training-size rule
    info = held_out.info
    if num_classes != info.num_classes:
        raise CheckpointError(
            f"{fp32_path}: model has {num_classes} classes, dataset {info.name!r} has {info.num_classes}"
        )
    if isinstance(calibration, str | Path):
        predictor = Predictor.from_onnx(fp32_path)
        files, inputs = folder_inputs(calibration, num_calib, lambda p: predictor.prepare(p)[1])
        source = f"folder {calibration} ({len(files)} images)"
    else:
        inputs = dataset_inputs(calibration, num_calib, input_size, spec.train_size)
        source = f"{calibration_name} ({min(num_calib, len(calibration))} of {len(calibration)} images)"
        shared = shared_images(calibration, held_out)
        if shared:  # e.g. a folder dataset without split lists: every split is every image
            source += f"; {shared} of them also in the held-out split {held_out_name.rsplit('/', 1)[-1]!r}"
            logger.warning(
                "%s and %s share %d images (no split lists?): the INT8 accuracy is checked on images it "
                "was calibrated on; give --calibration-images DIR (other photos) or write train.txt / test.txt",
                calibration_name,
                held_out_name,
                shared,
            )
    quant = quantize_int8(fp32_path, int8_path, inputs, keep_float=keep_float, calibration_source=source)
    int8 = OnnxRunner(int8_path)
    indices = spread_indices(len(held_out), num_eval)
    metrics = compare_accuracy(
        {"fp32": fp32, "int8": int8},
        (held_out[i] for i in indices),
        num_classes=info.num_classes,
        protocol=protocol,
        input_size=input_size,
        train_size=spec.train_size,
    )
    report = accuracy_report(
        metrics["fp32"], metrics["int8"], max_delta1_drop=max_delta1_drop, max_miou_drop=max_miou_drop
    )
    report["quantization"] = quant
    report["calibration"] = source
    report["evaluation"] = {"split": held_out_name, "images": len(indices)}
    report["protocol"] = protocol.to_dict()
    return report


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

    int8_out, report_out = int8_paths(out)
    for src, dst in ((fp32_tmp, Path(out)), (int8_tmp, int8_out)):
        atomic_write_bytes(dst, Path(src).read_bytes())
    atomic_write_json(report_out, report_json(report))
