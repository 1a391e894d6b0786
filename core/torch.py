"""PyTorch autograd functions over logmm's kernel: ``logmm.torch`` (needs ``logmm[torch]``).

``logmatmulexp(A, B)`` and ``logeinsum(subscripts, *operands)`` take and return tensors
and are differentiable: the forward pass is :func:`logmm.logmatmulexp` (resp.
:func:`logmm.logeinsum`) and the backward pass :func:`logmm.logmatmulexp_vjp` (resp.
:func:`logmm.logeinsum_vjp`), so neither stores or forms the n·k·m tensor that autograd
through ``torch.logsumexp(A[..., :, :, None] + B[..., None, :, :], -2)`` would. Only
the inputs and the output are saved for backward. Computation runs on the CPU in numpy
(tensors on another device are copied there and the results copied back); float32 and
float64 keep their dtype, other floating dtypes are computed in float32 and cast back.
Double backward is not supported.

This module is imported only on request (``import logmm.torch``); ``import logmm``
never imports torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InputError, install_hint

try:
    import torch
except ImportError as exc:      # pragma: no cover - exercised only without torch
    raise ImportError(f"logmm.torch needs PyTorch: {install_hint('torch')}") from exc

from torch.autograd.function import once_differentiable

from .einsum import logeinsum as _np_logeinsum
from .grad import logeinsum_vjp, logmatmulexp_vjp
from .logmatmul import logmatmulexp as _np_logmatmulexp
from .typing import Method

__all__ = ["logeinsum", "logmatmulexp"]


def _to_numpy(x: torch.Tensor) -> np.ndarray:
    x = x.detach()
    if x.dtype.is_complex:
        raise InputError(f"tensor of dtype {x.dtype} is not a real log-space operand")
    if x.dtype.is_floating_point and x.dtype not in (torch.float32, torch.float64):
        x = x.to(torch.float32)          # float16, bfloat16: numpy has no bfloat16
    return x.cpu().numpy()


def _to_tensor(x: np.ndarray, like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    x = np.asarray(x, order="C")                 # (np.ascontiguousarray makes 0-d 1-d)
    return torch.from_numpy(x).to(device=like.device, dtype=dtype)


def _float_dtype(*tensors: torch.Tensor) -> torch.dtype:
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype if dtype.is_floating_point else torch.float64


class _LogMatMulExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, A: torch.Tensor, B: torch.Tensor, method: Method) -> torch.Tensor:
        C = _np_logmatmulexp(_to_numpy(A), _to_numpy(B), method=method)
        out = _to_tensor(C, A, _float_dtype(A, B))
        ctx.method = method
        ctx.save_for_backward(A, B, out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, G: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        A, B, C = ctx.saved_tensors
        if not (ctx.needs_input_grad[0] or ctx.needs_input_grad[1]):
            return None, None, None
        dA, dB = logmatmulexp_vjp(_to_numpy(A), _to_numpy(B), _to_numpy(C), _to_numpy(G),
                                  method=ctx.method)
        return (_to_tensor(dA, A, A.dtype) if ctx.needs_input_grad[0] else None,
                _to_tensor(dB, B, B.dtype) if ctx.needs_input_grad[1] else None,
                None)


class _LogEinsum(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, subscripts: str, method: Method, *operands: torch.Tensor
                ) -> torch.Tensor:
        C = _np_logeinsum(subscripts, *(_to_numpy(op) for op in operands), method=method)
        out = _to_tensor(C, operands[0], _float_dtype(*operands))
        ctx.subscripts, ctx.method = subscripts, method
        ctx.save_for_backward(*operands, out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, G: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        *operands, C = ctx.saved_tensors
        wanted = ctx.needs_input_grad[2:]
        if not any(wanted):
            return (None, None) + (None,) * len(operands)
        grads = logeinsum_vjp(ctx.subscripts, [_to_numpy(op) for op in operands],
                              _to_numpy(C), _to_numpy(G), method=ctx.method)
        return (None, None) + tuple(_to_tensor(g, op, op.dtype) if w else None
                                    for g, op, w in zip(grads, operands, wanted, strict=True))


def logmatmulexp(A: torch.Tensor, B: torch.Tensor, *, method: Method = "auto") -> torch.Tensor:
    """Differentiable ``log(exp(A) @ exp(B))`` for tensors (see :func:`logmm.logmatmulexp`).

    Shapes as ``torch.matmul``: A (..., n, k), B (..., k, m) -> (..., n, m). The result
    has the promoted floating dtype and A's device; gradients have their input's dtype.
    Error bounds: :func:`logmm.logmatmulexp` (forward), :func:`logmm.logmatmulexp_vjp`
    (backward).

    Examples
    --------
    >>> import torch, logmm.torch
    >>> A = torch.tensor([[-500.0, 900.0]], dtype=torch.float64, requires_grad=True)
    >>> B = torch.tensor([[900.0], [-500.0]], dtype=torch.float64)
    >>> logmm.torch.logmatmulexp(A, B).sum().backward()
    >>> A.grad.round(decimals=12).tolist()
    [[0.5, 0.5]]
    """
    return _LogMatMulExp.apply(A, B, method)


def logeinsum(subscripts: str, *operands: torch.Tensor, method: Method = "auto") -> torch.Tensor:
    """Differentiable log-semiring einsum for tensors (see :func:`logmm.logeinsum`).

    The gradient is :func:`logmm.logeinsum_vjp` (one gradient contraction per operand).

    Examples
    --------
    >>> import torch, logmm.torch
    >>> X = torch.log(torch.tensor([[1.0, 3.0]], dtype=torch.float64)).requires_grad_()
    >>> logmm.torch.logeinsum("ij->i", X).sum().backward()
    >>> X.grad.round(decimals=12).tolist()
    [[0.25, 0.75]]
    """
    if not operands:
        raise InputError(f"einsum {subscripts!r} needs at least one operand")
    return _LogEinsum.apply(subscripts, method, *operands)
