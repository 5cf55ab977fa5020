"""Run CI-Net on arbitrary images: :class:`Predictor` and its result, :class:`Prediction`.

An image of any size and mode is turned into an RGB array, normalised and fitted to the network by the one
input policy shared with ``cinet eval`` (:mod:`cinet.preprocess`: the model's :class:`~cinet.preprocess.InputSpec`
mean/std, optional resize, padding to a multiple of 8) and run under
``torch.inference_mode``. The depth map and the class logits are cropped back to the content and resized to
the original image size, so a :class:`Prediction` is always at the input's resolution.

Training resolution: when the checkpoint records the image size it was trained at and an image's longer side
is far from it (more than :data:`~cinet.preprocess.FAR_FACTOR` times larger or smaller), the image
is scaled to the training image's longer side by default and one warning line says so; ``keep_size=True``
keeps the image's own size (and warns instead). An explicit ``input_size`` replaces this rule; ``max_side`` only
caps the size it chose (a memory / speed limit).

The same :class:`Predictor` runs a PyTorch model (:meth:`Predictor.from_checkpoint`, :meth:`Predictor.__init__`)
or an exported ONNX file through onnxruntime (:meth:`Predictor.from_onnx`); the raw :class:`CINetOutput`
(SUM attention of Fig. 7, shared features of Eq. 14 / Fig. 8) is only available with PyTorch.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import torch

from cinet.checkpoint import CheckpointPayload, load_model
from cinet.checks.memory import check_image_fits, measure_bytes_per_pixel, output_bytes
from cinet.data.base import pil_to_rgb, read_rgb
from cinet.data.info import DatasetInfo
from cinet.errors import CheckpointError, DataError, InputError
from cinet.inference.export import OnnxRunner, export_onnx
from cinet.inference.runtime import MAX_DEPTH_REL_DIFF, MAX_LABEL_DISAGREEMENT, agreement, resolve_runtime
from cinet.models.cinet import CINet, build_kwargs_of, require_joint
from cinet.models.outputs import AttentionState, CINetOutput
from cinet.models.sum import INFERENCE_ATTENTION_IMPL, set_attention_impl
from cinet.preprocess import FIT_MODES, Geometry, InputSpec, to_network, training_side
from cinet.recipe import VARIANTS
from cinet.utils.device import resolve_device

if TYPE_CHECKING:
    from PIL import Image as PILImage

logger = logging.getLogger(__name__)

ImageLike = Union[str, Path, "PILImage.Image", np.ndarray]
RESIZE_MODES = FIT_MODES

__all__ = ["Geometry", "ImageLike", "Prediction", "Predictor", "load_image"]


# --------------------------------------------------------------------------------------------- image input


def load_image(image: ImageLike) -> np.ndarray:
    """Read an image as an ``HxWx3`` uint8 RGB array.

    Args:
        image: A file path (read by :func:`cinet.data.base.read_rgb`, as the datasets read their images:
            EXIF orientation applied, 16-bit greyscale scaled to 8 bits), a PIL image of any mode
            (:func:`cinet.data.base.pil_to_rgb`; its EXIF orientation applied too, as for its file), or a
            uint8 array ``HxW``, ``HxWx1``, ``HxWx3`` or ``HxWx4`` (alpha dropped).

    Returns:
        ``HxWx3`` uint8, C-contiguous.

    Raises:
        InputError: The file is missing or not a readable image, or the array has another shape / dtype.
    """
    from PIL import Image

    if isinstance(image, str | Path):
        path = Path(image)
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        try:
            return read_rgb(path)  # the datasets' reader: same modes, same EXIF orientation, same array
        except DataError as exc:
            raise InputError(str(exc)) from exc
    if isinstance(image, Image.Image):
        from PIL import ImageOps

        try:  # turned by its EXIF orientation: Image.open(path) gives what read_rgb(path) gives
            return pil_to_rgb(ImageOps.exif_transpose(image))
        except ValueError as exc:
            raise InputError(f"<PIL image>: mode {image.mode!r} cannot be converted to RGB ({exc})") from exc
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise InputError(f"<array>: image arrays must be uint8 (0..255), got {image.dtype}")
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or min(image.shape[:2]) < 1:
            raise InputError(
                f"<array>: expected an HxW, HxWx1, HxWx3 or HxWx4 array, got shape {image.shape}"
            )
        if image.shape[2] == 1:
            image = np.repeat(image, 3, axis=2)
        return np.ascontiguousarray(image[:, :, :3])
    raise InputError(
        f"<{type(image).__name__}>: not an image (expected a path, a PIL image or a uint8 array)"
    )


# --------------------------------------------------------------------------------------------- results


@dataclass
class Prediction:
    """Result of :meth:`Predictor.predict` for one image (everything at the input image size).

    Attributes:
        depth: ``HxW`` float32 depth in metres (> 0).
        labels: ``HxW`` class ids (uint8; uint16 for more than 256 classes), argmax of the logits.
        probs: ``CxHxW`` float32 softmax probabilities, or None unless ``return_probs=True``.
        image: ``HxWx3`` uint8 RGB image the prediction was made from (for visualisations).
        geometry: How the image was fitted to the network input.
        output: The raw :class:`~cinet.models.outputs.CINetOutput` of this image (batch of one, at the network
            input size) when ``return_output=True``; None otherwise.
    """

    depth: np.ndarray
    labels: np.ndarray
    image: np.ndarray
    geometry: Geometry
    probs: np.ndarray | None = None
    output: CINetOutput | None = None


# --------------------------------------------------------------------------------------------- predictor


def _slice_output(out: CINetOutput, i: int) -> CINetOutput:
    """Image ``i`` of a batched CINetOutput, as a batch of one."""

    att = out.attention
    if att is not None:
        att = AttentionState(att.query[i : i + 1], att.key[i : i + 1], att.size, att.given)
    return CINetOutput(
        depth=out.depth[i : i + 1],
        seg_logits=out.seg_logits[i : i + 1],
        attention=att,
        depth_features=[f[i : i + 1] for f in out.depth_features],
        seg_features=[f[i : i + 1] for f in out.seg_features],
        shared_features=[(d[i : i + 1], s[i : i + 1]) for d, s in out.shared_features],
    )


def _float_output(out: CINetOutput) -> CINetOutput:
    """``out`` with every tensor in float32 (the output of a bf16 autocast forward)."""
    att = out.attention
    return dataclasses.replace(
        out,
        depth=None if out.depth is None else out.depth.float(),
        seg_logits=None if out.seg_logits is None else out.seg_logits.float(),
        attention=None
        if att is None
        else dataclasses.replace(att, query=att.query.float(), key=att.key.float()),
        depth_features=[f.float() for f in out.depth_features],
        seg_features=[f.float() for f in out.seg_features],
        shared_features=[(a.float(), b.float()) for a, b in out.shared_features],
    )


def _payload_options(payload: CheckpointPayload, kwargs: dict[str, Any]) -> dict[str, Any]:
    """:class:`Predictor` options from a checkpoint's (or model folder's) payload, under the caller's ``kwargs``:
    its build arguments, the training size, and its evaluation size (``data.eval_size``, as ``cinet eval``
    uses it) unless a ``max_side`` is given."""
    options = {"model_kwargs": payload.model, "train_size": payload.train_size, **kwargs}
    if payload.eval_size and options.get("max_side") is None:
        options.setdefault("input_size", payload.eval_size)
    return options


def _dataset_info(payload: CheckpointPayload, source: str, where: str) -> DatasetInfo:
    """The payload's :class:`DatasetInfo`; CheckpointError naming ``source`` when missing or bad."""
    if not payload.dataset:
        raise CheckpointError(f"{source}: {where} has no dataset info (classes, palette, mean/std)")
    try:
        return payload.dataset_info()
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: bad dataset info in {where} ({exc})") from exc


class Predictor:
    """Depth + segmentation for any image with a trained CI-Net.

    Args:
        model: A :class:`~cinet.models.CINet` (put in eval mode), or a callable mapping a normalised batch
            ``[B,3,H,W]`` to ``(depth [B,1,H,W], seg_logits [B,C,H,W])`` (used for ONNX).
        info: The dataset description (classes, palette, mean/std, intrinsics), e.g. from the checkpoint. A
            model loaded from a checkpoint (:func:`cinet.checkpoint.load_model`) normalises with its stored
            mean/std whatever ``info`` says; any other model with ``info``'s.
        device: ``cpu``, ``cuda``, ``cuda:1`` or ``auto``.
        mode: ``pad`` (reflect-pad bottom/right to a multiple of ``pad_multiple``, default) or ``resize``
            (resize to the nearest multiple).
        pad_multiple: Network input sides are made multiples of this (8 = output stride of the encoder).
        max_side: Cap on the network input's longer side, after the training-size rule (results are resized
            back up).
        input_size: Fixed network input ``(H, W)`` (fixed-size ONNX models); every image is resized to it.
        train_size: ``(H, W)`` of the images the model was trained on (from the checkpoint); images far from it
            are scaled to its longer side unless ``keep_size`` is given.
        keep_size: Run every image at its own size even when far from ``train_size`` (a warning says so).
        source: Where the model came from (checkpoint path), used in error messages.
        model_kwargs: build_model arguments of the model, if known (shown in messages).
        attention_impl: The SUM's attention path at inference (set on ``model`` in place); the default
            ``auto`` is memory-bounded for large maps whatever the checkpoint was trained with
            (:func:`cinet.models.sum.set_attention_impl`). None keeps the model's own.
        runtime: ``auto`` (default), ``eager-fp32``, ``eager-bf16``, ``onnx-fp32`` or ``onnx-int8``
            (:mod:`cinet.inference.runtime`: the per-machine choice and the first-batch parity check against
            ``eager-fp32``, with fall-back to it).

    Example:
        >>> from cinet import Predictor
        >>> pred = Predictor.from_checkpoint("runs/demo/last.ckpt").predict("room.jpg")
        >>> pred.depth.shape, pred.labels.dtype
    """

    def __init__(
        self,
        model: torch.nn.Module | Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
        info: DatasetInfo | dict[str, Any],
        *,
        device: str | torch.device = "cpu",
        mode: str = "pad",
        pad_multiple: int = 8,
        max_side: int | None = None,
        input_size: tuple[int, int] | None = None,
        train_size: tuple[int, int] | None = None,
        keep_size: bool = False,
        source: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
        attention_impl: str | None = INFERENCE_ATTENTION_IMPL,
        runtime: str = "auto",
    ) -> None:
        if mode not in RESIZE_MODES:
            raise ValueError(f"mode must be one of {RESIZE_MODES}, got {mode!r}")
        if pad_multiple < 1:
            raise ValueError(f"pad_multiple must be >= 1, got {pad_multiple}")
        if max_side is not None and max_side < pad_multiple:
            raise ValueError(f"max_side must be >= pad_multiple ({pad_multiple}), got {max_side}")
        self.info = info if isinstance(info, DatasetInfo) else DatasetInfo.from_dict(info)
        self.device = resolve_device(device)
        self.mode = mode
        self.pad_multiple = pad_multiple
        self.max_side = max_side
        self.keep_size = keep_size
        self._said: set[tuple[Any, ...]] = set()  # resolution notes already logged (once per image size)
        self.source = source or "<model>"
        self.model_kwargs = dict(model_kwargs or build_kwargs_of(model))
        self.is_torch = isinstance(model, torch.nn.Module)
        if self.is_torch:
            require_joint(model, self.source)
            model = model.to(self.device).eval()
            if attention_impl is not None:
                set_attention_impl(model, attention_impl)
        self.model = model
        self._bytes_per_pixel: float | None = None  # forward memory per network-input pixel, measured once
        spec = InputSpec(self.info.mean, self.info.std, train_size=train_size, eval_size=input_size)
        # a model loaded from a checkpoint (load_model, from_pretrained) knows what it was trained with: that
        # wins over ``info`` (e.g. ``dataset_info(...)``'s ImageNet default); a fresh model follows ``info``
        if isinstance(model, CINet) and model.normalization_from_checkpoint:
            stored = (tuple(model.input_mean), tuple(model.input_std))
            if stored != (spec.mean, spec.std):
                logger.info("%s: normalising with the checkpoint's mean/std %s / %s", self.source, *stored)
            spec = dataclasses.replace(spec, mean=stored[0], std=stored[1])
        #: The input policy of this model (:mod:`cinet.preprocess`): mean/std, training size, fixed input size.
        self.input_spec = spec
        self.info = dataclasses.replace(self.info, mean=spec.mean, std=spec.std)
        onnx_kind = model.kind if isinstance(model, OnnxRunner) else None if self.is_torch else "onnx-fp32"
        choice = resolve_runtime(runtime, self.device, onnx_kind=onnx_kind)
        #: The runtime that runs (:data:`cinet.inference.runtime.RUNTIMES`); ``eager-fp32`` after a failed check.
        self.runtime = choice.runtime
        # a fall-back from a runtime asked for by name warns; one from auto's choice is an info line
        self._runtime_asked = runtime != "auto"
        self._runtime_checked = not self.is_torch or self.runtime == "eager-fp32"
        self._onnx: OnnxRunner | None = None
        self._onnx_dir: tempfile.TemporaryDirectory[str] | None = None
        if self.is_torch and self.runtime == "onnx-fp32":
            self._onnx = self._export_for_runtime()
        logger.info("%s: inference runtime %s", self.source, choice.reason)

    @property
    def train_size(self) -> tuple[int, int] | None:
        """``(H, W)`` the model was trained at (:attr:`input_spec`), or None."""
        return self.input_spec.train_size

    @property
    def input_size(self) -> tuple[int, int] | None:
        """The fixed network input ``(H, W)`` (:attr:`input_spec`'s ``eval_size``), or None."""
        return self.input_spec.eval_size

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str | torch.device = "cpu", **kwargs: Any
    ) -> Predictor:
        """Load a cinet checkpoint (weights_only) and wrap it.

        Args:
            path: The ``.ckpt`` file written by ``cinet train`` or :func:`cinet.checkpoint.save_model_checkpoint`.
            device: ``cpu``, ``cuda`` or ``auto``.
            **kwargs: Options of :class:`Predictor` (``mode``, ``pad_multiple``, ``max_side``).

        Raises:
            CheckpointError: One line naming the file (missing, truncated, weights that do not fit).
        """

        dev = resolve_device(device)
        model, payload = load_model(path, dev)
        info = _dataset_info(payload, str(path), "checkpoint")
        return cls(model, info, device=dev, source=str(path), **_payload_options(payload, kwargs))

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        device: str | torch.device = "cpu",
        *,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        **kwargs: Any,
    ) -> Predictor:
        """Load a :func:`cinet.inference.hub.save_pretrained` folder or a Hugging Face Hub repository id.

        The ``PyTorchModelHubMixin`` convention (``config.json`` + ``model.safetensors``); a repository id is
        read through the hub cache (``HF_HUB_OFFLINE=1``: the cache only). The same predictions as
        :meth:`from_checkpoint` on the checkpoint the folder was made from.

        Args:
            name_or_path: A folder, or ``user/name`` on the hub.
            device: ``cpu``, ``cuda`` or ``auto``.
            revision: Hub branch, tag or commit.
            cache_dir: Hub cache folder (default: the hub's).
            local_files_only: Never reach the network.
            token: Hub token for private repositories.
            **kwargs: Options of :class:`Predictor` (``mode``, ``pad_multiple``, ``max_side``).

        Raises:
            CheckpointError: One line naming the folder or id (missing files, not cached offline, weights that
                do not fit the model described).
        """
        from cinet.inference.hub import load_pretrained  # local: hub needs the optional huggingface_hub

        dev = resolve_device(device)
        hub = load_pretrained(
            name_or_path,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
        )
        info = _dataset_info(hub.payload, str(name_or_path), "config.json")
        model = hub.net.to(dev).eval()
        return cls(model, info, device=dev, source=str(name_or_path), **_payload_options(hub.payload, kwargs))

    @classmethod
    def from_onnx(cls, path: str | Path, device: str = "cpu", **kwargs: Any) -> Predictor:
        """Wrap an ONNX file written by :func:`cinet.inference.export.export_onnx` (onnxruntime).

        The dataset info comes from the file's metadata; a fixed-size export resizes every image to its size.

        Raises:
            InputError: The file is missing, not ONNX, or lacks the cinet metadata.
        """

        runner = OnnxRunner(path, device=device)
        if runner.fixed_size is not None:
            kwargs.setdefault("input_size", runner.fixed_size)
            logger.warning(
                "%s: fixed-size ONNX model: every image is resized to %dx%d (export without --height/--width "
                "for a dynamic one)",
                path,
                runner.fixed_size[1],
                runner.fixed_size[0],
            )
        kwargs.setdefault("train_size", runner.train_size)
        return cls(
            runner,
            runner.dataset_info,
            device="cpu",
            source=str(path),
            model_kwargs=runner.model_kwargs,
            **kwargs,
        )

    # ------------------------------------------------------------------ preprocessing

    def geometry(self, height: int, width: int) -> Geometry:
        """How an image of ``height`` x ``width`` is fitted to the network (:meth:`InputSpec.plan`).

        Logs one warning per image size when the training-resolution rule scales the image (or would have,
        with ``keep_size``).
        """
        geometry = self.input_spec.plan(
            height,
            width,
            max_side=self.max_side,
            keep_size=self.keep_size,
            multiple=self.pad_multiple,
            mode=self.mode,
        )
        rule = self.input_size is None
        if rule and training_side(height, width, self.train_size) is not None:
            th, tw = self.train_size  # type: ignore[misc]
            if self.keep_size:
                self._note(
                    (height, width),
                    "%s: image %dx%d is far from the training resolution %dx%d; kept at its size (--keep-size): "
                    "expect poor results, or drop --keep-size to scale it",
                    self.source,
                    width,
                    height,
                    tw,
                    th,
                )
            else:
                self._note(
                    (height, width),
                    "%s: image %dx%d is far from the training resolution %dx%d: the network sees it at %dx%d, "
                    "results are at %dx%d (--keep-size to run it at its own size)",
                    self.source,
                    width,
                    height,
                    tw,
                    th,
                    geometry.scaled[1],
                    geometry.scaled[0],
                    width,
                    height,
                )
        return geometry

    def _note(self, key: tuple[Any, ...], msg: str, *args: Any) -> None:  # sizes in messages: WxH, as PIL
        if key not in self._said:
            self._said.add(key)
            logger.warning(msg, *args)

    def network_size(self, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """``(scaled, padded)`` sizes used for an image of ``height`` x ``width`` (see :meth:`geometry`)."""
        g = self.geometry(height, width)
        return g.scaled, g.padded

    def prepare(self, image: ImageLike) -> tuple[np.ndarray, torch.Tensor, Geometry]:
        """Load an image and make its normalised network input.

        Returns:
            ``(rgb HxWx3 uint8, input [3,Hp,Wp] float32 on the device, geometry)``.
        """
        rgb = load_image(image)
        geometry = self.geometry(*rgb.shape[:2])
        return rgb, self._network_input(rgb, geometry), geometry

    def _network_input(self, rgb: np.ndarray, geometry: Geometry) -> torch.Tensor:
        """``rgb`` HxWx3 uint8 -> the normalised network input [3,Hp,Wp] float32 on the device."""
        x = self.input_spec.normalize_uint8(torch.tensor(rgb, device=self.device))  # [1,3,H,W]
        return to_network(x, geometry)[0]

    # ------------------------------------------------------------------ inference

    def _export_for_runtime(self) -> OnnxRunner:
        """The model exported once (dynamic sizes, float32) into a temporary folder kept while this predictor
        uses it, for the ``onnx-fp32`` runtime of a PyTorch model.

        Raises:
            InputError: Both ONNX exporters failed (their first lines).
        """
        self._onnx_dir = tempfile.TemporaryDirectory(prefix="cinet-onnx-")
        # a small traced sample: the export is dynamic in batch, height and width
        side = 8 * self.pad_multiple
        try:
            path = export_onnx(
                self.model,
                Path(self._onnx_dir.name) / "model.onnx",
                height=side,
                width=side,
                dynamic=True,
                dataset_info=self.info,
                model_kwargs=self.model_kwargs,
                train_size=self.train_size,
            )
        except (
            RuntimeError
        ) as exc:  # export_onnx's one line naming each exporter's failure, as cinet export says
            self._release_onnx()
            raise InputError(f"{self.source}: runtime onnx-fp32: {exc}") from exc
        return OnnxRunner(path, device=str(self.device))

    def _fall_back_to_fp32(self, why: str, *args: Any) -> None:
        """Switch to ``eager-fp32`` for the rest of the run, saying ``why`` (a logging format with ``args``) in one
        line: a warning for a runtime asked for by name, an info line for ``auto``'s choice."""
        logger.log(logging.WARNING if self._runtime_asked else logging.INFO, "%s: " + why, self.source, *args)
        self.runtime, self._runtime_checked = "eager-fp32", True
        self._release_onnx()

    def _release_onnx(self) -> None:
        """Drop the ``onnx-fp32`` session and its temporary file (after a fall-back to eager)."""
        self._onnx = None
        if self._onnx_dir is not None:
            self._onnx_dir.cleanup()
            self._onnx_dir = None

    def _run(
        self, batch: torch.Tensor, runtime: str, keep_output: bool
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """``(depth [B,1,H,W], logits [B,C,H,W], output or None)`` in float32 of the PyTorch model under
        ``runtime`` (``output``: the whole :class:`CINetOutput` when ``keep_output``)."""
        if runtime == "onnx-fp32" and self._onnx is not None and not keep_output:
            depth, logits = self._onnx(batch)
            return depth, logits, None
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=runtime == "eager-bf16"):
            out = self.model(batch)
        if runtime == "eager-bf16":
            out = _float_output(out)
        return out.depth, out.seg_logits, (out if keep_output else None)

    def _forward(self, batch: torch.Tensor, keep_output: bool) -> tuple[torch.Tensor, torch.Tensor, Any]:
        if self.is_torch:
            if keep_output and self.runtime == "onnx-fp32":  # attention / shared features: only in PyTorch
                self._fall_back_to_fp32(
                    "the attention / shared features need the PyTorch model: runtime eager-fp32, not onnx-fp32"
                )
            depth, logits, out = self._run(batch, self.runtime, keep_output)
            if not self._runtime_checked:  # the first batch: parity against eager float32
                self._runtime_checked = True
                ref = self._run(batch, "eager-fp32", keep_output)
                agr = agreement(depth, logits, ref[0], ref[1])
                if not agr.accepted:
                    self._fall_back_to_fp32(
                        "runtime %s differs from eager-fp32 on the first batch (depth %.2f %% mean relative, "
                        "labels %.2f %% of pixels; bounds %.0f %% and %.0f %%): using eager-fp32",
                        self.runtime,
                        100 * agr.depth_rel_diff,
                        100 * agr.label_disagreement,
                        100 * MAX_DEPTH_REL_DIFF,
                        100 * MAX_LABEL_DISAGREEMENT,
                    )
                    return ref
            return depth, logits, out
        if keep_output:
            raise InputError(
                f"{self.source}: the raw model output (attention, shared features) needs a PyTorch checkpoint, "
                "not an ONNX file"
            )
        depth, logits = self.model(batch)
        return depth, logits, None

    def _finish(
        self,
        rgb: np.ndarray,
        geom: Geometry,
        depth: torch.Tensor,
        logits: torch.Tensor,
        return_probs: bool,
        output: CINetOutput | None,
    ) -> Prediction:
        depth = geom.restore(depth.float())[0, 0]
        logits = geom.restore(logits.float())[0]
        labels = logits.argmax(0)
        probs = torch.softmax(logits, dim=0).cpu().numpy().astype(np.float32) if return_probs else None
        label_dtype = np.uint8 if logits.shape[0] <= 256 else np.uint16
        return Prediction(
            depth=depth.cpu().numpy().astype(np.float32),
            labels=labels.cpu().numpy().astype(label_dtype),
            image=rgb,
            geometry=geom,
            probs=probs,
            output=output,
        )

    def predict(
        self, image: ImageLike, *, return_probs: bool = False, return_output: bool = False
    ) -> Prediction:
        """Predict depth and segmentation for one image.

        Args:
            image: A path, a PIL image (any mode) or an ``HxWx3`` uint8 array (``HxW``/``HxWx4`` also accepted).
            return_probs: Also return the ``CxHxW`` class probabilities.
            return_output: Keep the raw :class:`CINetOutput` (PyTorch models only), e.g. for the figures.

        Returns:
            A :class:`Prediction` at the image's size.
        """
        return self.predict_batch(
            [image], batch_size=1, return_probs=return_probs, return_output=return_output
        )[0]

    def predict_batch(
        self,
        images: Iterable[ImageLike],
        *,
        batch_size: int = 4,
        return_probs: bool = False,
        return_output: bool = False,
        names: Sequence[str] | None = None,
    ) -> list[Prediction]:
        """Predict many images, ``batch_size`` at a time (images of the same network size share a batch).

        Args:
            images: Paths, PIL images or arrays, in any mix of sizes.
            batch_size: Images per forward pass.
            return_probs: See :meth:`predict`.
            return_output: See :meth:`predict`.
            names: What error messages call each image (e.g. the file an array was read from); default: the
                path for paths, ``<image i>`` for arrays.

        Raises:
            InputError: An image too large for the free memory (:meth:`check_fits`), named as above.

        Returns:
            One :class:`Prediction` per image, in order.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        results: list[Prediction | None] = []
        pending: list[tuple[int, np.ndarray, torch.Tensor, Geometry]] = []

        def flush() -> None:
            batch = torch.stack([p[2] for p in pending])
            with torch.inference_mode():
                depth, logits, out = self._forward(batch, return_output)
                for j, (idx, rgb, _, geom) in enumerate(pending):
                    one = _slice_output(out, j) if out is not None else None
                    results[idx] = self._finish(
                        rgb, geom, depth[j : j + 1], logits[j : j + 1], return_probs, one
                    )
            pending.clear()

        for i, image in enumerate(images):
            if names is not None:
                name = str(names[i])
            else:
                name = str(image) if isinstance(image, str | Path) else f"<image {i}>"
            rgb = load_image(image)
            geom = self.geometry(*rgb.shape[:2])
            # checked before the float tensors exist: only the decoded image is held (LOADED_BYTES_PER_PIXEL)
            self.check_fits(*geom.orig, batch=min(batch_size, 1 + len(pending)), name=name)
            x = self._network_input(rgb, geom)
            if pending and (pending[0][3].padded != geom.padded or len(pending) >= batch_size):
                flush()
            results.append(None)
            pending.append((len(results) - 1, rgb, x, geom))
        if pending:
            flush()
        return [r for r in results if r is not None]

    # ------------------------------------------------------------------ memory

    def forward_bytes(self, height: int, width: int, batch: int = 1) -> int:
        """Estimated peak memory (bytes) of predicting ``batch`` images of ``height`` x ``width`` pixels.

        PyTorch models: the activation peak of one forward, measured once per predictor on a 256 x 256 input
        with fake tensors (``FakeTensorMode`` + ``torch.distributed._tools.mem_tracker.MemTracker``: no memory
        is allocated, nothing is computed) and scaled by the number of network-input pixels (exact for the
        memory-bounded attention paths, whose peak grows linearly with N). ONNX files, and a PyTorch model under
        the ``onnx-fp32`` runtime: the naive attention's B x N x N map (the SUM is exported naive). Both add the
        input and the full-size outputs (depth, logits and their softmax / argmax at the image size).

        Args:
            height: Image rows (before ``max_side`` / padding).
            width: Image columns.
            batch: Images per forward pass.

        Returns:
            Bytes; 0 when no estimate can be made.
        """
        _, (ph, pw) = self.network_size(height, width)
        classes = self.info.num_classes
        outputs = output_bytes(height, width, (ph, pw), batch, classes)
        if self.is_torch and self.runtime != "onnx-fp32":
            return int(self._forward_bytes_per_pixel() * batch * ph * pw) + outputs

        spec = VARIANTS.get(str(self.model_kwargs.get("variant", "cinet")))
        if spec is None or spec.use_sum:
            n = math.ceil(ph / self.pad_multiple) * math.ceil(pw / self.pad_multiple)
            return 2 * 4 * batch * n * n + outputs
        return outputs

    def _forward_bytes_per_pixel(self) -> float:
        if self._bytes_per_pixel is None:
            self._bytes_per_pixel = measure_bytes_per_pixel(self.model, self.device)
        return self._bytes_per_pixel

    def check_fits(self, height: int, width: int, batch: int = 1, *, name: str = "<image>") -> None:
        """Refuse, before any work, an image whose forward pass cannot fit in the device's free memory
        (:func:`cinet.checks.memory.check_image_fits` with :meth:`forward_bytes` as the estimate; only images
        above ``MEMORY_CHECK_MIN_PIXELS`` are checked).

        Raises:
            InputError: One line naming the file, the memory needed and free, and the ``--max-side`` (the
                ``max_side`` option) that fits; or, when even the smallest input leaves the full-size results
                too large, saying to downscale the file.
        """

        def estimate(max_side: int | None) -> int:
            saved = self.max_side
            self.max_side = max_side
            try:
                return self.forward_bytes(height, width, batch)
            finally:
                self.max_side = saved

        (_, _), (ph, pw) = self.network_size(height, width)
        check_image_fits(
            estimate,
            height,
            width,
            batch,
            network_pixels=ph * pw,
            max_side=self.max_side,
            min_side=self.pad_multiple,
            device=self.device,
            name=name,
        )

    # ------------------------------------------------------------------ helpers

    @property
    def has_attention(self) -> bool:
        """Whether the model has a SUM whose attention (Fig. 7) can be read (PyTorch models only)."""
        return self.is_torch and self.model.sum is not None

    @property
    def has_sharing(self) -> bool:
        """Whether the model has feature-sharing modules (FSM / LSU) whose features (Eq. 14, Fig. 8) can be read
        (PyTorch models only)."""
        return self.is_torch and self.model.share is not None

    def require_output_features(self, what: str) -> None:
        """Raise InputError when the model cannot give ``what`` (``attention`` / ``features``)."""
        if not self.is_torch:
            raise InputError(f"{self.source}: --{what} needs a PyTorch checkpoint, not an ONNX file")
