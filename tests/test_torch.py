"""logmm.torch: autograd functions over the kernel (skipped, visibly, without torch)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed or does not import "
                            "(pip install 'logmm[torch]')", exc_type=ImportError)

import logmm.torch as lt  # noqa: E402
from logmm import adversarial  # noqa: E402


def broadcast_reference(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """What users do today: autograd through an n·k·m broadcast logsumexp."""
    return torch.logsumexp(A[..., :, :, None] + B[..., None, :, :], dim=-2)


def test_gradcheck_logmatmulexp() -> None:
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(3, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    B = torch.randn(2, 4, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(lt.logmatmulexp, (A, B))


EINSUM_CASES = [("ij,jk,kl->il", [(3, 4), (4, 2), (2, 3)]), ("ii->i", [(3, 3)]),
                ("...ij,...jk->...ik", [(2, 1, 3, 4), (3, 4, 2)]), ("ij,ij->j", [(1, 4), (3, 4)]),
                ("ijk->", [(2, 3, 2)])]


@pytest.mark.parametrize(("subscripts", "shapes"), EINSUM_CASES,
                         ids=[c[0] for c in EINSUM_CASES])
def test_gradcheck_logeinsum(subscripts: str, shapes: list) -> None:
    gen = torch.Generator().manual_seed(1)
    ops = [torch.randn(*s, dtype=torch.float64, generator=gen, requires_grad=True)
           for s in shapes]
    assert torch.autograd.gradcheck(lambda *xs: lt.logeinsum(subscripts, *xs), tuple(ops))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_agrees_with_autograd_through_broadcast_logsumexp(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(2)
    A0 = 5 * torch.randn(2, 6, 7, dtype=dtype, generator=gen)
    B0 = 5 * torch.randn(7, 5, dtype=dtype, generator=gen)
    W = torch.randn(2, 6, 5, dtype=dtype, generator=gen)
    grads = []
    for fn in (lt.logmatmulexp, broadcast_reference):
        A, B = A0.clone().requires_grad_(), B0.clone().requires_grad_()
        out = fn(A, B)
        (out * W).sum().backward()
        grads.append((out.detach(), A.grad, B.grad))
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    for ours, theirs in zip(*grads, strict=True):
        assert ours.dtype == dtype
        torch.testing.assert_close(ours, theirs, **tol)


def test_public_counterexample_gradient_where_broadcast_also_works() -> None:
    A0, B0, _ = adversarial.counterexamples()[1]
    A = torch.tensor(A0, requires_grad=True)
    B = torch.tensor(B0, requires_grad=True)
    lt.logmatmulexp(A, B).sum().backward()
    torch.testing.assert_close(A.grad, torch.tensor([[0.5, 0.5]], dtype=torch.float64))
    torch.testing.assert_close(B.grad, torch.tensor([[0.5], [0.5]], dtype=torch.float64))


def test_neg_inf_gives_zero_gradient_not_nan() -> None:
    A = torch.tensor([[0.0, -np.inf], [-np.inf, -np.inf]], requires_grad=True)
    B = torch.tensor([[-np.inf, 1.0], [0.0, -np.inf]], requires_grad=True)
    C = lt.logmatmulexp(A, B)
    assert C[0, 0] == -np.inf and bool(torch.isinf(C[1]).all())
    C.masked_fill(torch.isinf(C), 0).sum().backward()
    assert not torch.isnan(A.grad).any() and not torch.isnan(B.grad).any()
    assert A.grad.tolist() == [[1.0, 0.0], [0.0, 0.0]]
    assert B.grad.tolist() == [[0.0, 1.0], [0.0, 0.0]]
    # autograd through the broadcast gives NaN here
    A2, B2 = A.detach().clone().requires_grad_(), B.detach().clone().requires_grad_()
    C2 = broadcast_reference(A2, B2)
    C2.masked_fill(torch.isinf(C2), 0).sum().backward()
    assert torch.isnan(A2.grad).any()


def test_dtype_and_grad_requirements() -> None:
    A = torch.zeros(2, 3, dtype=torch.float32, requires_grad=True)
    B = torch.zeros(3, 2, dtype=torch.float64)
    C = lt.logmatmulexp(A, B)
    assert C.dtype == torch.float64 and C.device == A.device
    C.sum().backward()
    assert A.grad.dtype == torch.float32 and B.grad is None
    H = torch.zeros(2, 3, dtype=torch.float16, requires_grad=True)
    out = lt.logmatmulexp(H, H.T)
    assert out.dtype == torch.float16
    out.sum().backward()
    assert H.grad.dtype == torch.float16


def test_logeinsum_gradient_matches_torch_broadcast_reference() -> None:
    gen = torch.Generator().manual_seed(3)
    X0 = 4 * torch.randn(2, 3, 4, dtype=torch.float64, generator=gen)
    Y0 = 4 * torch.randn(2, 4, 5, dtype=torch.float64, generator=gen)
    X0[0, 1, 2] = -np.inf
    W = torch.randn(2, 3, 5, dtype=torch.float64, generator=gen)
    grads = []
    for fn in (lambda x, y: lt.logeinsum("bij,bjk->bik", x, y), broadcast_reference):
        X, Y = X0.clone().requires_grad_(), Y0.clone().requires_grad_()
        (fn(X, Y) * W).sum().backward()
        grads.append((X.grad, Y.grad))
    for ours, theirs in zip(*grads, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_import_logmm_does_not_import_torch() -> None:
    code = "import sys, logmm; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
