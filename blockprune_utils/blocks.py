"""Block division of weight matrices and block scores.

A weight matrix of shape (rows, cols) is tiled with non-overlapping k x k blocks
anchored at (0, 0).  The grid has ``ceil(rows/k) x ceil(cols/k)`` blocks; the last
block row/column is *partial* when k does not divide the dimension.  Partial blocks
are scored over the elements that actually exist (no zero padding enters a mean),
as in the authors' code.

Convolution weights (out, in, kh, kw) are handled as the 2-D matrix
(out, in*kh*kw), the usual "im2col" view of a convolution.
"""
from __future__ import annotations

import math
import numbers
from typing import Callable, Union

import torch

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Score = Union[str, ScoreFn]


def check_block_size(k) -> int:
    """Return ``k`` as an int, or raise a ValueError naming the bad value."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        if isinstance(k, float) and k.is_integer():
            raise ValueError(f"block size k must be an integer >= 1, got float {k!r}; pass int({k!r})")
        raise ValueError(f"block size k must be an integer >= 1, got {k!r}")
    if k < 1:
        raise ValueError(f"block size k must be an integer >= 1, got {k!r}")
    return int(k)


def as_matrix(weight: torch.Tensor) -> torch.Tensor:
    """View a weight as the 2-D matrix that is divided into blocks.

    Linear weights (out, in) are returned as they are; convolution weights
    (out, in, *kernel) as (out, in*prod(kernel)).  Anything else is an error.
    """
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    if weight.dim() == 2:
        return weight
    if weight.dim() in (3, 4, 5):
        return weight.reshape(weight.shape[0], -1)
    raise ValueError(
        f"cannot divide a weight of shape {tuple(weight.shape)} into blocks: expected a 2-D "
        "Linear weight (out, in) or a conv weight (out, in, *kernel), reshaped to (out, in*kernel)"
    )


def check_finite(weight: torch.Tensor, what: str = "weight") -> None:
    if not torch.isfinite(weight).all():
        n_nan = int(torch.isnan(weight).sum())
        n_inf = int(torch.isinf(weight).sum())
        raise ValueError(f"{what} holds non-finite values ({n_nan} NaN, {n_inf} inf): cannot score blocks")


def block_grid(shape, k: int) -> tuple[int, int]:
    """Number of block rows and block columns for a 2-D ``shape``."""
    k = check_block_size(k)
    if len(shape) != 2:
        raise ValueError(f"block_grid needs a 2-D shape, got {tuple(shape)}")
    return math.ceil(shape[0] / k), math.ceil(shape[1] / k)


def to_blocks(matrix: torch.Tensor, k: int) -> torch.Tensor:
    """Zero-pad a 2-D matrix to multiples of k and return its tiles, shape (R, C, k, k)."""
    k = check_block_size(k)
    rows, cols = matrix.shape
    R, C = block_grid(matrix.shape, k)
    padded = torch.nn.functional.pad(matrix, (0, C * k - cols, 0, R * k - rows))
    return padded.reshape(R, k, C, k).permute(0, 2, 1, 3)


def block_counts(shape, k: int) -> torch.Tensor:
    """How many real (unpadded) elements each block holds, shape (R, C)."""
    return to_blocks(torch.ones(tuple(shape)), k).sum(dim=(2, 3))


def _mean_abs(blocks: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    return blocks.abs().sum(dim=(2, 3)) / counts


def _l2(blocks: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    # root mean square: the L2 norm normalised by the number of real elements, so that
    # partial edge blocks are ranked on the same footing as full ones (like mean |w|).
    return (blocks.pow(2).sum(dim=(2, 3)) / counts).sqrt()


SCORES: dict[str, ScoreFn] = {"mean_abs": _mean_abs, "l2": _l2}


def block_scores(weight: torch.Tensor, k: int, score: Score = "mean_abs") -> torch.Tensor:
    """Score every k x k block of ``weight``; returns a float64 tensor of shape (R, C).

    ``score`` is ``"mean_abs"`` (the paper's: mean |w| over the block's real
    elements), ``"l2"`` (root mean square over the real elements) or a callable
    ``f(blocks, counts) -> scores`` taking the zero-padded tiles (R, C, k, k) and
    the real-element counts (R, C).
    """
    k = check_block_size(k)
    matrix = as_matrix(weight).detach().to(torch.float64)
    check_finite(matrix)
    if isinstance(score, str):
        if score not in SCORES:
            raise ValueError(f"unknown block score {score!r}; choose one of {sorted(SCORES)} or pass a callable")
        fn = SCORES[score]
    elif callable(score):
        fn = score
    else:
        raise TypeError(f"score must be a name or a callable, got {score!r}")
    counts = block_counts(matrix.shape, k).to(device=matrix.device, dtype=torch.float64)  # on the weight's device (GPU)
    out = torch.as_tensor(fn(to_blocks(matrix, k), counts), dtype=torch.float64)
    if out.shape != counts.shape:
        raise ValueError(f"score function returned shape {tuple(out.shape)}, expected the block grid {tuple(counts.shape)}")
    check_finite(out, "block scores")
    return out


def expand_block_mask(block_mask: torch.Tensor, shape, k: int) -> torch.Tensor:
    """Expand an (R, C) block mask to an element mask of ``shape`` (cropping the padding)."""
    k = check_block_size(k)
    expected = block_grid(shape, k)
    if tuple(block_mask.shape) != expected:
        raise ValueError(
            f"block mask of shape {tuple(block_mask.shape)} does not match the {expected} grid "
            f"of a {tuple(shape)} matrix with k={k}"
        )
    full = block_mask.repeat_interleave(k, 0).repeat_interleave(k, 1)
    return full[: shape[0], : shape[1]]


def block_mask_of(matrix: torch.Tensor, k: int) -> torch.Tensor:
    """Blocks that hold at least one non-zero element, shape (R, C), bool."""
    nonzero = (as_matrix(matrix).detach() != 0).to(torch.float32)
    return to_blocks(nonzero, k).amax(dim=(2, 3)) > 0
