"""Parity of the memory-efficient SUM attention (Eq. 1–2) and attention BCE (Eq. 3–4) with the naive paths.

The tiled path is plain PyTorch; the Triton kernels run under ``TRITON_INTERPRET=1`` on CPU here (small sizes)
and natively in the ``gpu``-marked tests.
"""

from __future__ import annotations

import importlib
import pathlib

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from cinet.ops import attention_bce, sigmoid_attention, tiled, triton_kernels

sa = importlib.import_module("cinet.ops.sigmoid_attention")  # the module (the package exports the function)

IGNORE = 255


def _inputs(
    b: int,
    n: int,
    d: int,
    c: int,
    dtype: torch.dtype = torch.float64,
    device: str = "cpu",
    logit_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + n)
    q = (torch.randn(b, n, d, generator=g, dtype=torch.float64) * logit_scale / d**0.5).to(device, dtype)
    k = torch.randn(b, n, d, generator=g, dtype=torch.float64).to(device, dtype)
    v = torch.randn(b, n, c, generator=g, dtype=torch.float64).to(device, dtype)
    labels = torch.randint(0, 5, (b, n), generator=g)
    labels[torch.rand(b, n, generator=g) < 0.2] = IGNORE
    return q, k, v, labels.to(device)


def _ref_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    return torch.sigmoid(q @ k.transpose(1, 2)) @ v * scale  # [B,N,C], in the input dtype


def _ref_bce(q: torch.Tensor, k: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 4 in the input dtype (float64 here): the naive op computes its logits in float32."""
    s = q @ k.transpose(1, 2)  # [B,N,N]
    valid = labels != IGNORE
    target = (labels[:, :, None] == labels[:, None, :]).to(s.dtype)
    pair = (valid[:, :, None] & valid[:, None, :]).to(s.dtype)
    bce = F.binary_cross_entropy_with_logits(s, target, reduction="none")
    return (bce * pair).sum() / pair.sum().clamp_min(1.0)


def _grads(loss: torch.Tensor, *xs: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, xs))


def _assert_close(a: torch.Tensor, b: torch.Tensor, rtol: float, atol: float) -> None:
    torch.testing.assert_close(a.to(b.dtype), b, rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------------------- tiled


@pytest.mark.parametrize(
    ("b", "n", "tile"), [(2, 40, 16), (3, 70, 16), (2, 129, 32), (1, 64, 64), (2, 33, 100)]
)
def test_tiled_attention_matches_reference_float64(b: int, n: int, tile: int) -> None:
    q, k, v, _ = _inputs(b, n, 16, 32)
    xs = [t.clone().requires_grad_() for t in (q, k, v)]
    ys = [t.clone().requires_grad_() for t in (q, k, v)]
    w = torch.randn(b, n, 32, dtype=torch.float64)  # a non-trivial upstream gradient
    y_ref = _ref_attention(*xs, scale=1.0 / n)
    y = sigmoid_attention(*ys, scale=1.0 / n, impl="tiled", tile_size=tile)
    _assert_close(y, y_ref, 1e-10, 1e-12)
    for g, g_ref in zip(_grads((y * w).sum(), *ys), _grads((y_ref * w).sum(), *xs)):
        _assert_close(g, g_ref, 1e-10, 1e-12)


@pytest.mark.parametrize(("n", "tile"), [(40, 16), (70, 16), (97, 32)])
def test_tiled_attention_matches_naive_float32(n: int, tile: int) -> None:
    q, k, v, _ = _inputs(2, n, 16, 32, torch.float32)
    xs = [t.clone().requires_grad_() for t in (q, k, v)]
    ys = [t.clone().requires_grad_() for t in (q, k, v)]
    w = torch.randn(2, n, 32)
    y_ref = sigmoid_attention(*xs, scale=0.5, impl="naive")
    y = sigmoid_attention(*ys, scale=0.5, impl="tiled", tile_size=tile)
    _assert_close(y, y_ref, 1e-4, 1e-5)
    for g, g_ref in zip(_grads((y * w).sum(), *ys), _grads((y_ref * w).sum(), *xs)):
        _assert_close(g, g_ref, 1e-4, 1e-5)


def test_sum_residual_gradient_reaches_x() -> None:
    """Eq. 2: Y = A~ V + X; the gradient to X is the identity whatever the path."""
    q, k, v, _ = _inputs(2, 50, 16, 32, torch.float32)
    x = torch.randn(2, 50, 32, requires_grad=True)
    y = sigmoid_attention(q, k, v, scale=1 / 50, impl="tiled", tile_size=16) + x
    (gx,) = torch.autograd.grad((y * 3.0).sum(), x)
    _assert_close(gx, torch.full_like(x, 3.0), 0, 0)


@pytest.mark.parametrize(("b", "n", "tile"), [(2, 40, 16), (3, 70, 16), (2, 129, 32), (1, 64, 64)])
def test_tiled_bce_matches_reference_float64(b: int, n: int, tile: int) -> None:
    q, k, _, labels = _inputs(b, n, 16, 8)
    xs = [t.clone().requires_grad_() for t in (q, k)]
    ys = [t.clone().requires_grad_() for t in (q, k)]
    ref = _ref_bce(*xs, labels)
    out = attention_bce(*ys, labels, ignore_index=IGNORE, impl="tiled", tile_size=tile)
    assert out.dtype == torch.float64
    _assert_close(out, ref, 1e-10, 1e-12)
    for g, g_ref in zip(_grads(out, *ys), _grads(ref, *xs)):
        _assert_close(g, g_ref, 1e-9, 1e-12)


@pytest.mark.parametrize(("n", "tile"), [(40, 16), (70, 16), (97, 32)])
def test_tiled_bce_matches_naive_float32(n: int, tile: int) -> None:
    q, k, _, labels = _inputs(2, n, 16, 8, torch.float32)
    xs = [t.clone().requires_grad_() for t in (q, k)]
    ys = [t.clone().requires_grad_() for t in (q, k)]
    ref = attention_bce(*xs, labels, ignore_index=IGNORE, impl="naive")
    out = attention_bce(*ys, labels, ignore_index=IGNORE, impl="tiled", tile_size=tile)
    _assert_close(out, ref, 1e-4, 1e-6)
    for g, g_ref in zip(_grads(out, *ys), _grads(ref, *xs)):
        _assert_close(g, g_ref, 1e-4, 1e-7)


def test_bce_arbitrary_label_values_only_equality_counts() -> None:
    """A_ij = [l_i == l_j]: label ids need not be small or contiguous (compact ids are internal)."""
    q, k, _, labels = _inputs(2, 40, 16, 8)
    sparse = torch.where(labels == IGNORE, labels, labels * 37 + 3)
    ref = _ref_bce(q, k, labels)
    out = attention_bce(q, k, sparse, ignore_index=IGNORE, impl="tiled", tile_size=16)
    _assert_close(out, ref, 1e-10, 1e-12)


@pytest.mark.parametrize("impl", ["naive", "tiled"])
def test_bce_all_ignored_is_zero_with_gradient(impl: str) -> None:
    q, k, _, _ = _inputs(2, 40, 16, 8, torch.float32)
    q.requires_grad_()
    k.requires_grad_()
    labels = torch.full((2, 40), IGNORE)
    out = attention_bce(q, k, labels, ignore_index=IGNORE, impl=impl, tile_size=16)
    assert out.item() == 0.0
    assert out.requires_grad
    gq, gk = torch.autograd.grad(out, (q, k))
    assert torch.count_nonzero(gq) == 0 and torch.count_nonzero(gk) == 0


def test_bce_one_image_all_ignored_counts_pairs_per_image() -> None:
    """Valid pairs are counted per image (sum_b n_valid(b)^2), as in the naive reference."""
    q, k, _, labels = _inputs(2, 40, 16, 8)
    labels[1] = IGNORE
    out = attention_bce(q, k, labels, ignore_index=IGNORE, impl="tiled", tile_size=16)
    _assert_close(out, _ref_bce(q, k, labels), 1e-10, 1e-12)
    _assert_close(out, _ref_bce(q[:1], k[:1], labels[:1]), 1e-10, 1e-12)


@pytest.mark.parametrize("impl", ["tiled", "naive"])
def test_large_logits_stay_finite(impl: str) -> None:
    """|S| ~ 100: softplus is evaluated stably, the loss and gradients stay finite and match float64."""
    q, k, v, labels = _inputs(2, 48, 16, 32, torch.float32, logit_scale=40.0)
    s = q @ k.transpose(1, 2)
    assert s.abs().max() > 100
    xs = [t.clone().requires_grad_() for t in (q, k, v)]
    loss = attention_bce(xs[0], xs[1], labels, ignore_index=IGNORE, impl=impl, tile_size=16)
    y = sigmoid_attention(*xs, scale=1 / 48, impl=impl, tile_size=16)
    grads = torch.autograd.grad(loss + y.sum(), xs)
    assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads)
    ref = _ref_bce(q.double(), k.double(), labels)
    _assert_close(loss, ref, 1e-4, 1e-4)


def test_tiled_bce_runs_in_float32_under_autocast() -> None:
    q, k, v, labels = _inputs(2, 40, 16, 32, torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = attention_bce(q, k, labels, ignore_index=IGNORE, impl="tiled", tile_size=16)
        y = sigmoid_attention(q, k, v, scale=1 / 40, impl="tiled", tile_size=16)
        y_naive = sigmoid_attention(q, k, v, scale=1 / 40, impl="naive")
    assert loss.dtype == torch.float32
    _assert_close(loss, _ref_bce(q.double(), k.double(), labels), 1e-5, 1e-6)
    assert y.dtype == y_naive.dtype == torch.bfloat16
    _assert_close(y.float(), y_naive.float(), 2e-2, 2e-2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_tiled_half_precision_backward(dtype: torch.dtype) -> None:
    """bf16/fp16 inputs (what autocast feeds the SUM): gradients accumulate in fp32 and match float64."""
    q, k, v, labels = _inputs(2, 70, 16, 32)
    xs = [t.clone().requires_grad_() for t in (q, k, v)]
    ys = [t.clone().to(dtype).requires_grad_() for t in (q, k, v)]
    w = torch.randn(2, 70, 32, dtype=torch.float64)
    y = sigmoid_attention(*ys, scale=1 / 70, impl="tiled", tile_size=16)
    loss = attention_bce(ys[0], ys[1], labels, ignore_index=IGNORE, impl="tiled", tile_size=16)
    assert y.dtype == dtype and loss.dtype == torch.float32
    g = _grads((y.double() * w).sum() + loss, *ys)
    y_ref = _ref_attention(*xs, scale=1 / 70)
    g_ref = _grads((y_ref * w).sum() + _ref_bce(xs[0], xs[1], labels), *xs)
    _assert_close(y.double(), y_ref, 3e-2, 3e-2)
    for a, b in zip(g, g_ref):
        assert a.dtype == dtype
        _assert_close(a.double(), b, 5e-2, 5e-2)


def test_tiled_backward_under_autocast_matches_naive() -> None:
    q, k, v, labels = _inputs(2, 70, 16, 32, torch.float32)
    grads = {}
    for impl in ("naive", "tiled"):
        xs = [t.clone().requires_grad_() for t in (q, k, v)]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = sigmoid_attention(*xs, scale=1 / 70, impl=impl, tile_size=16)
            loss = attention_bce(xs[0], xs[1], labels, ignore_index=IGNORE, impl=impl, tile_size=16)
        grads[impl] = _grads(y.float().square().sum() + loss, *xs)
    for a, b in zip(grads["tiled"], grads["naive"]):
        assert a.dtype == torch.float32
        _assert_close(a, b, 5e-2, 5e-2)


def test_tiled_functions_pass_gradcheck() -> None:
    q, k, v, labels = _inputs(2, 19, 4, 3)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    assert torch.autograd.gradcheck(lambda a, b, c: tiled.sigmoid_attention_tiled(a, b, c, 0.3, 8), (q, k, v))
    assert torch.autograd.gradcheck(lambda a, b: tiled.attention_bce_tiled(a, b, labels, IGNORE, 8), (q, k))


class _LargestAllocation(TorchDispatchMode):
    """Records the largest tensor produced by any op (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("impl", ["tiled", "naive"])
def test_tiled_never_materialises_the_map(impl: str) -> None:
    b, n, d, c, tile = 2, 300, 8, 4, 32
    q, k, v, labels = _inputs(b, n, d, c, torch.float32)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    with _LargestAllocation() as mode:
        y = sigmoid_attention(q, k, v, scale=1 / n, impl=impl, tile_size=tile)
        loss = attention_bce(q, k, labels, ignore_index=IGNORE, impl=impl, tile_size=tile) + y.sum()
        loss.backward()
    if impl == "tiled":
        assert mode.largest <= b * tile * n
    else:  # the check can fail: the naive path does allocate B x N x N
        assert mode.largest >= b * n * n


# ---------------------------------------------------------------------------------------------- dispatch


def test_resolve_impl_auto_and_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv(sa.TILED_MIN_N_ENV, raising=False)
    assert sa.resolve_impl("auto", cpu, 100) == "naive"
    assert sa.resolve_impl("auto", cpu, 4800) == "tiled"
    assert sa.resolve_impl("auto", cpu) == "tiled"
    assert sa.resolve_impl("triton", cpu, 100) == "tiled"  # no GPU, no interpreter
    assert sa.resolve_impl("naive", cpu, 10**6) == "naive"
    monkeypatch.setenv(sa.TILED_MIN_N_ENV, "50")
    assert sa.resolve_impl("auto", cpu, 100) == "tiled"
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert sa.resolve_impl("triton", cpu, 100, dtype=torch.float32) == (
        "triton" if triton_kernels.HAS_TRITON else "tiled"
    )
    assert sa.resolve_impl("triton", cpu, 100, dtype=torch.float64) == "tiled"
    monkeypatch.setattr(triton_kernels, "available", lambda device: True)  # pretend CUDA + Triton
    cuda = torch.device("cuda")
    assert sa.resolve_impl("auto", cuda, 100, dtype=torch.bfloat16, head_dim=64) == "triton"
    monkeypatch.setenv(sa.NO_TRITON_ENV, "1")
    assert sa.resolve_impl("auto", cuda, 4800, dtype=torch.bfloat16, head_dim=64) == "tiled"
    with pytest.raises(ValueError, match="attention_impl"):
        sa.resolve_impl("flash", cpu, 100)


def test_tile_size_from_env_and_invalid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tiled.TILE_ENV, "48")
    assert tiled.tile_size() == 48
    assert tiled.tile_size(7) == 7
    monkeypatch.setenv(tiled.TILE_ENV, "zero")
    with pytest.raises(ValueError, match=tiled.TILE_ENV):
        tiled.tile_size()
    with pytest.raises(ValueError, match="positive"):
        tiled.tile_size(0)


# ---------------------------------------------------------------------------------------------- Triton

needs_triton = pytest.mark.skipif(not triton_kernels.HAS_TRITON, reason="Triton is not installed")


def _triton_parity(device: str, dtype: torch.dtype, n: int, tile: int, rtol: float, atol: float) -> None:
    q, k, v, labels = _inputs(2, n, 16, 32, torch.float32, device=device)
    xs = [t.clone().requires_grad_() for t in (q, k, v)]
    ys = [t.clone().to(dtype).requires_grad_() for t in (q, k, v)]
    w = torch.randn(2, n, 32, device=device)
    y_ref = sigmoid_attention(*xs, scale=1 / n, impl="naive")
    l_ref = attention_bce(xs[0], xs[1], labels, ignore_index=IGNORE, impl="naive")
    assert sa.resolve_impl("triton", ys[0].device, n, dtype=dtype, head_dim=16) == "triton"
    y = sigmoid_attention(*ys, scale=1 / n, impl="triton", tile_size=tile)
    loss = attention_bce(ys[0], ys[1], labels, ignore_index=IGNORE, impl="triton", tile_size=tile)
    assert y.dtype == dtype and loss.dtype == torch.float32
    _assert_close(y.float(), y_ref, rtol, atol)
    _assert_close(loss, l_ref, rtol, atol)
    g = _grads((y.float() * w).sum() + loss, *ys)
    g_ref = _grads((y_ref * w).sum() + l_ref, *xs)
    for a, b in zip(g, g_ref):
        _assert_close(a.float(), b, rtol, atol)


@needs_triton
@pytest.mark.parametrize("n", [40, 70])
def test_triton_interpreter_matches_naive_float32(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    _triton_parity("cpu", torch.float32, n, tile=16, rtol=1e-4, atol=1e-5)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_interpreter_half_inputs(monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    _triton_parity("cpu", dtype, 70, tile=16, rtol=3e-2, atol=3e-2)


@needs_triton
@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # exp(100) = inf, sigmoid 0
def test_triton_interpreter_all_ignored_and_large_logits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    q, k, _, labels = _inputs(1, 40, 16, 8, torch.float32, logit_scale=40.0)
    q.requires_grad_()
    out = attention_bce(
        q, k, torch.full_like(labels, IGNORE), ignore_index=IGNORE, impl="triton", tile_size=16
    )
    assert out.item() == 0.0 and out.requires_grad
    loss = attention_bce(q, k, labels, ignore_index=IGNORE, impl="triton", tile_size=16)
    (gq,) = torch.autograd.grad(loss, q)
    assert torch.isfinite(loss) and torch.isfinite(gq).all()
    _assert_close(loss, _ref_bce(q.detach().double(), k.double(), labels), 1e-4, 1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("dtype", "tol"), [(torch.float32, 1e-4), (torch.bfloat16, 3e-2), (torch.float16, 1e-2)]
)
@pytest.mark.parametrize("n", [40, 70, 1000])
def test_triton_cuda_matches_naive(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype, tol: float, n: int
) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    _triton_parity("cuda", dtype, n, tile=64, rtol=tol, atol=tol / 10)


@pytest.mark.gpu
def test_tiled_cuda_matches_naive() -> None:
    q, k, v, labels = _inputs(2, 1000, 64, 128, torch.float32, device="cuda")
    y_ref = sigmoid_attention(q, k, v, scale=1e-3, impl="naive")
    y = sigmoid_attention(q, k, v, scale=1e-3, impl="tiled", tile_size=128)
    _assert_close(y, y_ref, 1e-4, 1e-5)
    l_ref = attention_bce(q, k, labels, ignore_index=IGNORE, impl="naive")
    _assert_close(attention_bce(q, k, labels, ignore_index=IGNORE, impl="tiled"), l_ref, 1e-4, 1e-6)


def _compile_for_sm90(kernel: object, pointers: dict[str, str], constexprs: dict[str, object]) -> None:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    jf = JITFunction(kernel)
    names = jf.arg_names
    signature = {n: "constexpr" if n in constexprs else pointers.get(n, "i32") for n in names}
    src = ASTSource(
        fn=jf, signature=signature, constexprs={(names.index(k),): v for k, v in constexprs.items()}
    )
    triton.compile(src, target=GPUTarget("cuda", 90, 32))


@pytest.mark.slow  # ~10-40 s: a real compile (the interpreter tests above cover the numerics)
@needs_triton
@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
def test_triton_kernels_compile_for_sm90_without_gpu(
    dtype: str, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    """The real compiler (frontend, TTGIR, PTX, ptxas) accepts every kernel at the production block sizes."""
    import triton

    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))  # compile for real, not from a cache

    if not (pathlib.Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas").exists():
        pytest.skip("Triton's bundled ptxas is not available")
    prec = "ieee" if dtype == "fp32" else None
    blocks = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_D": 64, "PREC": prec, "UPCAST": False}
    ptr = f"*{dtype}"
    tk = triton_kernels
    _compile_for_sm90(
        tk._sigmoid_mix,
        {"A": ptr, "B": ptr, "X": ptr, "Out": ptr, "scale": "fp32"},
        {**blocks, "BLOCK_C": 64},
    )
    _compile_for_sm90(
        tk._sigmoid_grad,
        {"A": ptr, "B": ptr, "X": ptr, "Y": ptr, "Out": ptr, "scale": "fp32"},
        {**blocks, "BLOCK_C": 64},
    )
    if dtype == "fp32":  # the BCE always runs in float32
        _compile_for_sm90(tk._softplus_rows, {"A": ptr, "B": ptr, "W": ptr, "Out": ptr}, blocks)


@pytest.mark.slow  # ~20 s of compilation on CPU
def test_tiled_paths_work_under_torch_compile() -> None:
    q, k, v, labels = _inputs(2, 70, 16, 32, torch.float32)
    xs = [t.clone().requires_grad_() for t in (q, k, v)]

    def f(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        y = sigmoid_attention(a, b, c, scale=1 / 70, impl="tiled", tile_size=16)
        return y.square().sum() + attention_bce(a, b, labels, ignore_index=IGNORE, impl="tiled", tile_size=16)

    ref = f(*xs)
    out = torch.compile(f)(*xs)
    _assert_close(out, ref, 1e-5, 1e-6)
    for g, g_ref in zip(_grads(out, *xs), _grads(ref, *xs)):
        _assert_close(g, g_ref, 1e-5, 1e-6)
