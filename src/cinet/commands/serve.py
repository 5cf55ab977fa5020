"""``cinet serve``: a web page to try a checkpoint — photo in; depth, segmentation, 3D points and attention out.

The page (Gradio, the optional extra ``cinet-pytorch[app]``) shows for an uploaded or dropped image: the input, the
coloured depth with its range in metres and a colour bar, the segmentation overlay with a legend of the classes
present, an interactive point cloud (Gradio's ``Model3D``) coloured by image or by class, and, when the model
has a SUM, the attention map of any pixel clicked on the input (Fig. 7). The downloads are the files
``cinet predict`` writes for the image, from the same code (:mod:`cinet.inference.page`,
:mod:`cinet.inference.files`).

The server binds to ``127.0.0.1`` unless ``--host`` says otherwise and is never shared publicly. Requests are
queued and run one at a time (``--concurrency``); uploads are limited in size (``--max-file-size``); a bad
upload gets one message in the page and the server keeps serving. Gradio's analytics are switched off
(``GRADIO_ANALYTICS_ENABLED=False``), so the page never reaches the network.

No torch or Gradio import at module level (``cinet --help`` stays fast).
"""

from __future__ import annotations

import argparse
import errno
import html
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cinet.commands.common import PathArgument, add_model_options, check_model_options, load_predictor
from cinet.errors import CinetError, InputError
from cinet.inference import IMAGE_EXTENSIONS
from cinet.utils.colors import DEPTH_CMAPS
from cinet.utils.io import atomic_save

if TYPE_CHECKING:
    from cinet.inference.files import FileOptions
    from cinet.inference.page import LegendEntry
    from cinet.inference.predictor import Predictor

logger = logging.getLogger(__name__)

INSTALL_HINT = "cinet serve needs Gradio, an optional extra: pip install 'cinet-pytorch[app]'"
KEEP_REQUEST_FOLDERS = 32  # download folders kept on disk (Gradio copies each result into its cache)
NUM_SYNTHETIC_EXAMPLES = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``cinet serve`` (those shared with ``cinet predict``: :func:`add_model_options`;
    ``--cmap`` and ``--alpha`` are the page's initial values)."""
    add_model_options(parser, onnx_note="no attention maps")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine)"
    )
    parser.add_argument("--port", type=int, default=7860, help="port (default: 7860; 0 = any free port)")
    parser.add_argument(
        "--viewer-points",
        type=int,
        default=150_000,
        help="most points shown in the 3D viewer (default 150000)",
    )
    parser.add_argument(
        "--max-file-size",
        default="20MB",
        help="largest upload accepted: a whole number of B, KB, MB, GB or TB (1 KB = 1024 B), e.g. 20MB, "
        "500KB (default: 20MB)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="requests run at the same time (default: 1, right for a CPU)",
    )
    parser.add_argument(
        "--examples",
        default=None,
        action=PathArgument,
        metavar="DIR|none",
        help="folder of example images; default: the demo's test rooms beside the checkpoint (inputs/), else "
        f"{NUM_SYNTHETIC_EXAMPLES} synthetic test rooms; 'none' for no examples",
    )


# --------------------------------------------------------------------------------------------- gradio


def import_gradio() -> Any:
    """Import Gradio with its analytics off (set before the import); CinetError with the install line if absent."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio
    except ImportError as exc:
        raise CinetError(INSTALL_HINT) from exc
    return gradio


def legend_html(legend: list[LegendEntry]) -> str:
    """The classes present as HTML: a colour swatch, the name and the share of pixels of each."""
    items = []
    for e in legend:
        r, g, b = e.color
        items.append(
            f'<span style="display:inline-flex;align-items:center;margin:2px 10px 2px 0">'
            f'<span style="width:14px;height:14px;background:rgb({r},{g},{b});border:1px solid #555;'
            f'margin-right:4px;display:inline-block"></span>{html.escape(e.name)} {100 * e.share:.1f}%</span>'
        )
    return '<div class="cinet-legend">' + "".join(items) + "</div>" if items else "<div>no class</div>"


class PageServer:
    """The state shared by all sessions of a page: the predictor, the options and the download folders.

    Args:
        predictor: The model.
        options: The file options (colour map and alpha are the page's initial values).
        max_viewer_points: Upper bound on the points of the 3D viewer.
    """

    def __init__(self, predictor: Predictor, options: FileOptions, max_viewer_points: int) -> None:
        self.predictor = predictor
        self.options = options
        self.max_viewer_points = max_viewer_points
        self.has_attention = predictor.has_attention
        self.root = Path(tempfile.mkdtemp(prefix="cinet-serve-"))
        self._folders: deque[Path] = deque()
        self._lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.served = 0

    def close(self) -> None:
        """Remove the download folders."""
        shutil.rmtree(self.root, ignore_errors=True)

    def _new_folder(self) -> Path:
        with self._lock:
            folder = Path(tempfile.mkdtemp(dir=self.root))
            self._folders.append(folder)
            while len(self._folders) > KEEP_REQUEST_FOLDERS:
                shutil.rmtree(self._folders.popleft(), ignore_errors=True)
        return folder

    def _enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1
            self.served += 1

    # ------------------------------------------------------------------ event handlers

    def predict(self, upload: str | None, cmap: str, alpha: float, colouring: str) -> tuple[Any, ...]:
        """Handler of an upload / the Run button: the page's outputs for one image file."""
        import dataclasses

        import gradio as gr

        from cinet.inference.page import predict_page

        if not upload:
            return tuple(gr.skip() for _ in range(10))
        if not 0.0 <= float(alpha) <= 1.0:
            raise gr.Error(f"overlay opacity must be in 0..1, got {alpha}", print_exception=False)
        self._enter()
        try:
            name = Path(upload).name
            options = dataclasses.replace(self.options, cmap=cmap, alpha=float(alpha))
            try:
                res = predict_page(
                    self.predictor,
                    upload,
                    self._new_folder(),
                    options,
                    name=name,
                    max_viewer_points=self.max_viewer_points,
                )
            except CinetError as exc:
                logger.warning("%s", exc)
                raise gr.Error(str(exc), print_exception=False) from None
        finally:
            self._leave()
        lo, hi = res.depth_range
        h, w = res.image.shape[:2]
        status = (
            f"**{html.escape(name)}**: {w}×{h} px, depth {lo:.2f}–{hi:.2f} m, "
            f"{len(res.legend)} classes, {len(res.downloads)} files; {html.escape(res.network)}"
        )
        status += "".join(f"<br>{html.escape(note)}" for note in res.notes)
        state = {"prediction": res.prediction, "viewer": {k: str(v) for k, v in res.viewer.items()}}
        return (
            state,
            res.image,
            res.depth_view,
            res.overlay,
            legend_html(res.legend),
            str(res.viewer[colouring]) if res.viewer else None,
            [str(p) for p in res.downloads],
            status,
            None,
            "",
        )

    def attention(self, state: dict[str, Any] | None, x: float, y: float) -> tuple[Any, str]:
        """Handler of the attention endpoint: the SUM attention map of pixel (x, y) of the last image."""
        import gradio as gr

        from cinet.inference.page import attention_view

        if not state:
            raise gr.Error("upload a photo first, then click a pixel", print_exception=False)
        if not self.has_attention:
            raise gr.Error(f"{self.predictor.source}: this model has no SUM, so no attention map")
        pred = state["prediction"]
        h, w = pred.geometry.orig
        x, y = round(float(x)), round(float(y))
        if not (0 <= x < w and 0 <= y < h):
            raise gr.Error(f"pixel ({x}, {y}) is outside the {w}×{h} image", print_exception=False)
        self._enter()
        try:
            image = attention_view(pred, x, y, source=str(self.predictor.source))
        finally:
            self._leave()
        return image, f"attention of pixel ({x}, {y})"

    def select(self, state: dict[str, Any] | None, evt: Any) -> tuple[Any, str, int, int]:
        """Handler of a click on the input image (``gr.SelectData.index`` = [x, y] in image pixels)."""
        x, y = evt.index[0], evt.index[1]
        image, text = self.attention(state, x, y)
        return image, text, x, y

    def view3d(self, state: dict[str, Any] | None, colouring: str) -> Any:
        """Handler of the colouring choice of the 3D viewer."""
        import gradio as gr

        if not state:
            return gr.skip()
        if not state["viewer"]:
            return None  # no intrinsics: no point cloud
        path = state["viewer"].get(colouring)
        if path is None or not Path(path).is_file():
            raise gr.Error("this result has expired; upload the photo again", print_exception=False)
        return path


def build_page(server: PageServer, examples: list[Path], title: str) -> Any:
    """The Gradio ``Blocks`` of the page (not launched)."""
    gr = import_gradio()
    from cinet.inference.page import VIEWER_COLOURINGS

    opts = server.options
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(600, 3600)) as page:
        state = gr.State(None, time_to_live=3600)
        gr.Markdown(f"## {html.escape(title)}")
        with gr.Row():
            with gr.Column(scale=1, min_width=240):
                photo = gr.File(
                    label="photo (upload or drop an image)",
                    file_types=sorted(IMAGE_EXTENSIONS),
                    type="filepath",
                    elem_id="photo",
                )
                cmap = gr.Dropdown(list(DEPTH_CMAPS), value=opts.cmap, label="depth colour map")
                alpha = gr.Slider(0.0, 1.0, value=opts.alpha, step=0.05, label="overlay opacity")
                run = gr.Button("Run", variant="primary")
                if examples:
                    gr.Examples([[str(p)] for p in examples], inputs=[photo], label="examples")
            with gr.Column(scale=4):
                status = gr.Markdown("Upload a photo.", elem_id="status")
                with gr.Row():
                    image = gr.Image(
                        label="input (click a pixel: its SUM attention, Fig. 7)"
                        if server.has_attention
                        else "input",
                        format="png",
                        interactive=False,
                        elem_id="input-image",
                    )
                    depth = gr.Image(
                        label="depth (metres: colour bar below)",
                        format="png",
                        interactive=False,
                        elem_id="depth",
                    )
                    overlay = gr.Image(
                        label="segmentation", format="png", interactive=False, elem_id="overlay"
                    )
                legend = gr.HTML(elem_id="legend")
                with gr.Row():
                    with gr.Column(scale=2):
                        viewer = gr.Model3D(
                            label="3D points (drag to turn)", elem_id="viewer", height=360, interactive=False
                        )
                        colouring = gr.Radio(
                            list(VIEWER_COLOURINGS), value=VIEWER_COLOURINGS[0], label="colour the points by"
                        )
                    with gr.Column(scale=2, visible=server.has_attention):
                        attention = gr.Image(
                            label="SUM attention (Fig. 7)",
                            format="png",
                            interactive=False,
                            elem_id="attention",
                        )
                        att_text = gr.Markdown(elem_id="attention-text")
                        with gr.Row():
                            px = gr.Number(label="pixel x", precision=0, value=0)
                            py = gr.Number(label="pixel y", precision=0, value=0)
                            show = gr.Button("show attention")
                    with gr.Column(scale=1):
                        downloads = gr.File(
                            label="downloads (as cinet predict writes them)",
                            file_count="multiple",
                            interactive=False,
                            elem_id="downloads",
                        )
        gr.on(
            [photo.change, run.click],
            server.predict,
            inputs=[photo, cmap, alpha, colouring],
            outputs=[state, image, depth, overlay, legend, viewer, downloads, status, attention, att_text],
            api_name="predict",
            concurrency_id="model",
        )

        def on_select(s: Any, evt: Any) -> tuple[Any, str, int, int]:
            return server.select(s, evt)

        on_select.__annotations__["evt"] = (
            gr.SelectData
        )  # Gradio passes the click to a gr.SelectData argument
        image.select(
            on_select,
            inputs=[state],
            outputs=[attention, att_text, px, py],
            api_visibility="private",
            concurrency_id="model",
        )
        show.click(
            server.attention,
            inputs=[state, px, py],
            outputs=[attention, att_text],
            api_name="attention",
            concurrency_id="model",
        )
        colouring.change(server.view3d, inputs=[state, colouring], outputs=[viewer], api_name="view3d")
    return page


# --------------------------------------------------------------------------------------------- run


def example_images(args: argparse.Namespace, folder: Path) -> list[Path]:
    """The example pictures of the page (see ``--examples``); synthetic rooms are rendered into ``folder``."""

    def images_in(d: Path) -> list[Path]:
        return sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)

    if args.examples is not None:
        if args.examples.lower() == "none":
            return []
        d = Path(args.examples)
        if not d.is_dir() or not images_in(d):
            raise InputError(f"{d}: --examples needs a folder with images")
        return images_in(d)[:8]
    if args.checkpoint is not None and (args.checkpoint.parent / "inputs").is_dir():
        found = images_in(args.checkpoint.parent / "inputs")
        if found:
            return found[:8]
    return synthetic_examples(folder, NUM_SYNTHETIC_EXAMPLES)


def synthetic_examples(folder: Path, count: int) -> list[Path]:
    """``count`` rooms of the built-in synthetic test split (240x320 PNG) written into ``folder``."""
    from PIL import Image

    from cinet.data.base import to_uint8_image
    from cinet.data.synthetic import SyntheticDataset

    ds = SyntheticDataset(split="test", size=(240, 320), length=count)
    paths = []
    for i in range(count):
        image = Image.fromarray(to_uint8_image(ds[i]["image"], ds.info))
        p = folder / f"room_{i}.png"
        atomic_save(p, lambda fh, image=image: image.save(fh, format="PNG"))
        paths.append(p)
    return paths


def start(args: argparse.Namespace) -> tuple[Any, PageServer, str]:
    """Check the options, load the model, build and launch the page without blocking.

    Returns:
        ``(Gradio Blocks, PageServer, local URL)``; call ``blocks.close()`` and ``server.close()`` to stop.

    Raises:
        CinetError: Gradio missing (the install line), a bad option (``--max-file-size``, a ``--host`` /
            ``--port`` the server cannot listen on), an unreadable checkpoint.
    """
    import_gradio()
    from cinet.inference.files import FileOptions

    intrinsics = check_model_options(args)
    if args.viewer_points < 1:
        raise InputError(f"--viewer-points: must be >= 1, got {args.viewer_points}")
    if args.concurrency < 1:
        raise InputError(f"--concurrency: must be >= 1, got {args.concurrency}")
    if not 0 <= args.port <= 65535:
        raise InputError(f"--port: must be in 0..65535, got {args.port}")
    max_file_size = parse_file_size(args.max_file_size)
    # before the model loads: a port in use, an address not of this machine
    check_listen(args.host, args.port)
    predictor = load_predictor(args)
    if intrinsics is None and predictor.info.intrinsics is None:  # the page works, without the 3D points
        print(
            f"cinet serve: dataset {predictor.info.name!r} of {predictor.source} has no camera intrinsics: no 3D "
            "points (--intrinsics fx,fy,cx,cy for them)",
            flush=True,
        )
    options = FileOptions(
        cmap=args.cmap, alpha=args.alpha, ply=True, ply_stride=args.ply_stride, intrinsics=intrinsics
    )
    server = PageServer(predictor, options, args.viewer_points)
    try:
        examples = example_images(args, server.root)
        variant = predictor.model_kwargs.get("variant", "onnx" if args.onnx else "?")
        title = f"CI-Net: {Path(predictor.source).name} ({variant}, {predictor.info.name})"
        page = build_page(server, examples, title)
        page.queue(default_concurrency_limit=args.concurrency)
        url = launch(
            page,
            args,
            share=False,
            show_error=True,
            quiet=True,
            max_file_size=max_file_size,
            allowed_paths=[str(server.root), *{str(p.parent) for p in examples}],
            footer_links=[],
            ssr_mode=False,
        )
    except BaseException:
        server.close()
        raise
    return page, server, url


FILE_SIZE_UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}


def parse_file_size(text: str) -> int:
    """``--max-file-size`` in bytes: a whole number with an optional unit of :data:`FILE_SIZE_UNITS` (``20MB``).

    Raises:
        InputError: One line naming ``--max-file-size`` when ``text`` is not such a size (``lots``, ``0``, ``1.5MB``).
    """
    match = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).upper() if match else ""
    if match is None or (unit and unit not in FILE_SIZE_UNITS):
        raise InputError(
            f"--max-file-size: expected a whole number of {', '.join(FILE_SIZE_UNITS)} (e.g. 20MB), got {text!r}"
        )
    size = int(match.group(1)) * FILE_SIZE_UNITS[unit or "B"]
    if size < 1:
        raise InputError(f"--max-file-size: must be at least 1 byte, got {text!r}")
    return size


def _socket_family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _bind_host(host: str) -> str:
    """``host`` as a socket binds it: an IPv6 address without the brackets of a URL (``[::1]`` -> ``::1``)."""
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def listen_error(host: str, port: int, exc: OSError) -> InputError:
    """The one-line error for an address the server cannot listen on, naming the option at fault.

    An address not of this machine (``EADDRNOTAVAIL``) or a host name that does not resolve names ``--host``;
    a port in use or not permitted (``EADDRINUSE``, ``EACCES``) and anything else names ``--port``.
    """
    reason = exc.strerror or str(exc) or type(exc).__name__
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        option = f"--host {host}"
    else:
        option = f"--port {port}"
    return InputError(f"{option}: cannot listen on {host}:{port} ({reason})")


def check_listen(host: str, port: int) -> None:
    """Refuse, before the model is loaded, an address the server cannot listen on (as Gradio probes it).

    Binds a socket with ``SO_REUSEADDR`` (as uvicorn does: a port left in ``TIME_WAIT`` by a stopped server is
    free) and closes it at once; port 0 asks only whether ``host`` is an address of this machine.

    Raises:
        InputError: See :func:`listen_error`.
    """
    try:
        with socket.socket(_socket_family(host)) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((_bind_host(host), port))
    except OSError as exc:
        raise listen_error(host, port, exc) from None


def _free_port(host: str) -> int:
    with socket.socket(_socket_family(host)) as s:
        s.bind((_bind_host(host), 0))
        return int(s.getsockname()[1])


def launch(page: Any, args: argparse.Namespace, **kwargs: Any) -> str:
    """Launch ``page`` on ``--host`` / ``--port`` without blocking; returns the local URL.

    Gradio reports an address it cannot bind as ``OSError: Cannot find empty port in range`` (a traceback): that
    becomes :func:`listen_error`'s one line, naming ``--host`` or ``--port`` (probed again for the reason).

    Raises:
        InputError: The server cannot listen on the address.
    """
    host = args.host
    try:
        port = args.port or _free_port(host)
    except OSError as exc:
        raise listen_error(host, args.port, exc) from None
    try:
        _, url, _ = page.launch(server_name=host, server_port=port, prevent_thread_lock=True, **kwargs)
    except OSError as exc:
        try:
            check_listen(host, port)  # the reason in words: in use, not an address of this machine
        except InputError as refused:
            raise refused from None
        raise listen_error(host, port, exc) from None
    return url


def run(args: argparse.Namespace) -> int:
    """Run ``cinet serve`` until stopped (Ctrl+C, or SIGTERM from ``kill`` / a service manager).

    The stop arrives as :class:`cinet.utils.signals.Interrupted` (installed by the CLI): the page and the
    server close, and the CLI prints one line and exits with 130 (SIGINT) or 143 (SIGTERM).
    """
    import time

    page, server, url = start(args)
    print(f"cinet serve: {url} (Ctrl+C to stop)", flush=True)
    try:
        while page.is_running:  # gradio's block_thread would swallow the interrupt and print its own line
            time.sleep(0.1)
    finally:
        page.close()
        server.close()
    return 0
