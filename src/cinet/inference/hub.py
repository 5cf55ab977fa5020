"""Weights that travel: a cinet checkpoint as a Hugging Face Hub model folder, and back.

The folder follows ``huggingface_hub``'s ``PyTorchModelHubMixin`` convention, so the hub, its cache and its
tools know it:

* ``config.json``: the checkpoint's ``cinet`` entry (``model``: the :func:`cinet.models.build_model` arguments,
  ``dataset``: classes, palette, mean/std, intrinsics, ``train_size``, ``training``: the merged training config,
  ``git``: the code revision, ``metrics``: the ``metrics.json`` of these weights with its protocol,
  ``source_sha256``: the SHA-256 of the checkpoint file they come from);
* ``model.safetensors``: the network's own state dict (the keys of ``build_model(**config["model"])``);
* ``README.md``: a model card generated from the above (metrics table with its protocol line and every protocol
  field, the model, the training config, the revision, how to load it).

:func:`save_pretrained` writes the folder (atomically: built beside it, then renamed into place; an existing
non-empty folder is refused), :meth:`cinet.Predictor.from_pretrained` reads a folder or a hub repository id
(through the hub cache; ``HF_HUB_OFFLINE=1`` reads the cache only), :func:`push_to_hub` uploads the folder.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelCard, ModelCardData, PyTorchModelHubMixin
from torch import nn

from cinet.checkpoint import STATE_PREFIX, CheckpointPayload, check_fits, load_model
from cinet.checks.outputs import check_new_folder
from cinet.errors import CheckpointError, CinetError, InputError, describe
from cinet.metrics.report import EvalProtocol, format_table
from cinet.models import build_model
from cinet.utils.io import atomic_dir, file_sha256

__all__ = ["CINetPretrained", "load_pretrained", "model_card_text", "push_to_hub", "save_pretrained"]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_TAGS = ["depth-estimation", "semantic-segmentation", "multi-task-learning", "cinet", "pytorch"]


class CINetPretrained(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="cinet",
    tags=list(CARD_TAGS),
    pipeline_tag="depth-estimation",
):
    """A CI-Net with everything needed to use and judge it, in the ``PyTorchModelHubMixin`` convention.

    Args:
        model: :func:`cinet.models.build_model` keyword arguments.
        dataset: The dataset description (:meth:`cinet.data.DatasetInfo.to_dict`).
        train_size: ``[H, W]`` of the training images, or None.
        training: The merged training config (plain types), or None.
        git: The code revision that trained the weights, or None.
        metrics: The ``metrics.json`` of these weights (metrics + ``protocol``), or None.
        source_sha256: SHA-256 of the checkpoint file the weights come from, or None.

    Attributes:
        net: The :class:`cinet.models.CINet` (in eval mode).
    """

    def __init__(
        self,
        model: dict,
        dataset: dict,
        train_size: list | None = None,
        training: dict | None = None,
        git: str | None = None,
        metrics: dict | None = None,
        source_sha256: str | None = None,
    ) -> None:
        super().__init__()

        kwargs = {**model, "encoder_weights": None}  # the folder holds the trained weights: fetch nothing
        try:
            self.net = build_model(**kwargs)
        except Exception as exc:
            raise CheckpointError(f"config.json: cannot build the model it describes ({exc})") from exc
        #: The checkpoint payload these weights came with (typed; ``config.json`` holds its fields).
        self.payload = CheckpointPayload(
            model=dict(model),
            dataset=dict(dataset),
            config=dict(training or {}),
            git=git,
            train_size=train_size,
        )
        self.metrics = metrics
        self.source_sha256 = source_sha256
        stored = self.payload.normalization
        if stored is not None:  # what it was trained with, as load_model does for a checkpoint
            self.net.input_mean, self.net.input_std = stored
            self.net.normalization_from_checkpoint = True
        self.net.eval()

    def forward(self, images: torch.Tensor) -> Any:
        """The network's output (:class:`cinet.models.outputs.CINetOutput`) for ``images`` ``[B,3,H,W]``."""
        return self.net(images)

    def _save_pretrained(self, save_directory: Path) -> None:
        from safetensors.torch import save_model

        save_model(self.net, str(Path(save_directory) / WEIGHTS_NAME))

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        map_location: str = "cpu",
        **model_kwargs: Any,
    ) -> CINetPretrained:
        from safetensors.torch import load_file

        if os.path.isdir(model_id):
            weights = Path(model_id) / WEIGHTS_NAME
            if not weights.is_file():
                raise CheckpointError(f"{weights}: not found (a save_pretrained folder holds {WEIGHTS_NAME})")
        else:
            weights = Path(
                _hub_download(
                    model_id, WEIGHTS_NAME, revision, cache_dir, force_download, local_files_only, token
                )
            )
        instance = cls(**model_kwargs)
        try:
            state = load_file(str(weights), device=str(map_location))
        except Exception as exc:
            raise CheckpointError(
                f"{weights}: cannot read safetensors ({type(exc).__name__}: {exc})"
            ) from None
        ckpt = {
            "state_dict": {STATE_PREFIX + k: v for k, v in state.items()},
            "cinet": instance.payload.to_dict(),
        }
        check_fits(instance.net, ckpt, weights)  # one line: what differs (variant, classes, encoder)
        instance.net.load_state_dict(state, strict=True)
        instance.net.eval()
        instance.source = str(weights)
        return instance

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        """The ``README.md`` of the folder: :func:`model_card_text` under the hub's metadata header."""
        data = ModelCardData(library_name="cinet", tags=list(CARD_TAGS), pipeline_tag="depth-estimation")
        text = model_card_text(self.payload, metrics=self.metrics, source_sha256=self.source_sha256)
        return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + text)


def _hub_download(
    repo_id: str,
    filename: str,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> str:
    """``hf_hub_download`` with its failures as one :class:`CheckpointError` line naming the repository."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HFValidationError

    try:
        return hf_hub_download(
            repo_id=repo_id,
            filename=filename,
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
        )
    except HFValidationError:
        raise CheckpointError(f"{repo_id}: neither a folder nor a hub repository id (user/name)") from None
    except Exception as exc:  # not in the cache offline, no network, no such repository or file
        raise CheckpointError(
            f"{repo_id}: cannot get {filename} from the hub or its cache ({describe(exc)})"
        ) from None


def load_pretrained(
    name_or_path: str | Path,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> CINetPretrained:
    """Read a :func:`save_pretrained` folder or a hub repository id (``user/name``, through the hub cache).

    Raises:
        CheckpointError: One line naming the folder or id: missing files, not in the cache (offline), weights
            that do not fit the model ``config.json`` describes.
    """
    name = str(name_or_path)
    if os.path.isdir(name):
        config_path = Path(name) / CONFIG_NAME
        if not config_path.is_file():
            raise CheckpointError(f"{config_path}: not found (not a save_pretrained folder)")
    else:
        if Path(name).suffix in (".ckpt", ".onnx") or os.path.exists(name):
            raise CheckpointError(
                f"{name}: not a save_pretrained folder (use --checkpoint / --onnx for files)"
            )
        config_path = Path(
            _hub_download(name, CONFIG_NAME, revision, cache_dir, False, local_files_only, token)
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{config_path}: cannot read ({type(exc).__name__}: {exc})") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise CheckpointError(f"{config_path}: no 'model' entry (not a cinet save_pretrained folder)")
    if not isinstance(config.get("dataset"), dict) or not config["dataset"]:
        raise CheckpointError(f"{config_path}: no 'dataset' entry (classes, palette, mean/std)")
    known = {"model", "dataset", "train_size", "training", "git", "metrics", "source_sha256"}
    kwargs = {k: v for k, v in config.items() if k in known}
    return CINetPretrained._from_pretrained(
        model_id=name,
        revision=revision,
        cache_dir=cache_dir,
        force_download=False,
        local_files_only=local_files_only,
        token=token,
        **kwargs,
    )


def _metrics_table(metrics: dict[str, Any]) -> list[str]:

    protocol = metrics.get("protocol") or {}
    lines = []
    values = {k: v for k, v in metrics.items() if k != "protocol" and not isinstance(v, dict | list)}
    row = {
        k: (float("nan") if v is None else v) for k, v in values.items() if isinstance(v, int | float | None)
    }
    try:
        names = {f.name for f in EvalProtocol.__dataclass_fields__.values()}
        proto = EvalProtocol(**{k: v for k, v in protocol.items() if k in names})
    except (TypeError, ValueError):
        proto = None
    lines.append(format_table({"these weights": row}, proto).rstrip("\n"))
    if protocol:
        lines += ["", "Every field of the protocol (a number is only comparable under the same one):", ""]
        lines += ["| field | value |", "|:--|:--|"]
        for k, v in protocol.items():
            if k != "description":
                lines.append(f"| {k} | {json.dumps(v)} |")
    return lines


def model_card_text(
    payload: CheckpointPayload, *, metrics: dict[str, Any] | None = None, source_sha256: str | None = None
) -> str:
    """The model card's Markdown (after the metadata header) for a :class:`CINetPretrained`'s payload, with
    the ``metrics.json`` of its weights and the SHA-256 of the checkpoint they come from."""
    model, dataset = payload.model, payload.dataset
    title = f"CI-Net ({model.get('variant', '?')}, {model.get('encoder', '?')}) — {dataset.get('name', '?')}"
    lines = [
        f"# {title}",
        "",
        "Joint monocular depth estimation and semantic segmentation with the contextual interaction of CI-Net "
        "(SUM, FSM / LSU, consistency loss), trained with cinet (`pip install cinet-pytorch`).",
        "",
        "## Use",
        "",
        "```bash",
        "pip install cinet-pytorch",
        "cinet predict --pretrained <this repository id or folder> photo.jpg --out predictions/",
        "```",
        "",
        "```python",
        "from cinet import Predictor",
        "predictor = Predictor.from_pretrained('<this repository id or folder>')",
        "pred = predictor.predict('photo.jpg')   # pred.depth: HxW metres, pred.labels: HxW class ids",
        "```",
        "",
        "## Results",
        "",
    ]
    if metrics:
        lines += _metrics_table(metrics)
    else:
        lines.append("No evaluation was recorded with these weights (`cinet eval` writes one).")
    classes = dataset.get("class_names") or []
    lines += [
        "",
        "## Model",
        "",
        "| build argument | value |",
        "|:--|:--|",
        *(f"| {k} | {json.dumps(v)} |" for k, v in model.items()),
        "",
        f"Classes ({len(classes)}): {', '.join(map(str, classes))}.",
        "",
        "## Training",
        "",
        f"- code revision: `{payload.git or 'unknown'}`",
        f"- training image size (H, W): {list(payload.train_size) if payload.train_size else 'unknown'}",
        f"- checkpoint SHA-256: `{source_sha256 or 'unknown'}`",
    ]
    training = payload.config
    if training:
        import yaml

        lines += [
            "",
            "Training config:",
            "",
            "```yaml",
            yaml.safe_dump(training, sort_keys=False).rstrip(),
            "```",
        ]
    return "\n".join(lines) + "\n"


def _from_checkpoint(checkpoint: str | Path, metrics: dict[str, Any] | None) -> CINetPretrained:

    net, payload = load_model(checkpoint)
    if not payload.dataset:
        raise CheckpointError(f"{checkpoint}: checkpoint has no dataset info (classes, palette, mean/std)")
    hub = CINetPretrained(
        model=json.loads(json.dumps(payload.model)),  # tuples -> lists, as config.json holds them
        dataset=json.loads(json.dumps(payload.dataset)),
        train_size=list(payload.train_size) if payload.train_size else None,
        training=payload.config or None,
        git=payload.git,
        metrics=metrics,
        source_sha256=file_sha256(checkpoint),
    )
    hub.net.load_state_dict(net.state_dict(), strict=True)
    return hub


def _read_metrics(checkpoint: Path, metrics: str | Path | dict | None) -> dict[str, Any] | None:
    """``metrics`` (a dict or a ``metrics.json``), else the ``metrics.json`` beside the checkpoint if any."""
    if isinstance(metrics, dict):
        return metrics
    path = Path(metrics) if metrics is not None else checkpoint.parent / "metrics.json"
    if not path.is_file():
        if metrics is not None:
            raise InputError(f"{path}: metrics file not found")
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read metrics ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: not a metrics.json (expected an object)")
    return data


def save_pretrained(
    checkpoint: str | Path, directory: str | Path, *, metrics: str | Path | dict | None = None
) -> Path:
    """Write the model folder of ``checkpoint`` (``config.json``, ``model.safetensors``, ``README.md``).

    Args:
        checkpoint: A cinet checkpoint (``cinet train``'s ``last.ckpt``).
        directory: The folder to create (absent or empty).
        metrics: A ``metrics.json`` (path or dict) of these weights; default: the one beside the checkpoint,
            if any. Its protocol travels in ``config.json`` and the card.

    Returns:
        The folder.

    Raises:
        CheckpointError: Unreadable checkpoint. InputError: ``directory`` is a file, a folder with files or
            cannot be created there (a file in the way, a read-only file system), or a bad metrics file. Nothing
            is written then; the folder appears whole or not at all (an ``OSError`` while writing names
            ``directory``).
    """
    checkpoint, directory = Path(checkpoint), Path(directory)
    check_new_folder(directory, "model folder")  # a file, a full folder, an unwritable place: before any work
    hub = _from_checkpoint(checkpoint, _read_metrics(checkpoint, metrics))
    with atomic_dir(directory) as tmp:  # errors name the folder, never the hidden temporary one
        hub.save_pretrained(tmp)
    return directory


def push_to_hub(
    checkpoint: str | Path,
    repo_id: str,
    *,
    metrics: str | Path | dict | None = None,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "cinet weights",
) -> str:
    """Upload the :func:`save_pretrained` folder of ``checkpoint`` to the hub repository ``repo_id``.

    Returns:
        The URL of the commit (``huggingface_hub``'s ``upload_folder``).

    Raises:
        CinetError: One line with the repository id when the upload fails (no network, no token, no rights).
    """
    from huggingface_hub import HfApi

    with tempfile.TemporaryDirectory() as tmp:
        folder = save_pretrained(checkpoint, Path(tmp) / "model", metrics=metrics)
        api = HfApi(token=token)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            info = api.upload_folder(
                repo_id=repo_id, folder_path=str(folder), commit_message=commit_message, repo_type="model"
            )
        except Exception as exc:
            raise CinetError(f"{repo_id}: upload failed ({describe(exc)})") from None
    return str(getattr(info, "commit_url", info))
