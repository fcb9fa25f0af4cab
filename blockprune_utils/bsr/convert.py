"""Block Sparse Row (BSR) storage of block-pruned layers: the BSR arrays, scipy and
torch BSR (and CSR for comparison) and storage bytes.  The torch modules that
compute with them are in :mod:`.layers`.

Padding policy
--------------
``scipy.sparse.bsr_matrix`` and torch's sparse BSR both need every dimension to
be a multiple of the block size.  A layer whose shape k does not divide (LeNet fc1
is 300 x 784: 784 = 3*261 + 1) is stored as the zero-padded matrix of shape
(ceil(out/k)*k, ceil(in/k)*k): each partial edge block becomes a full k x k block
whose extra entries are explicit zeros.  In the product the input is padded with
zero columns (they meet only those zeros) and the extra output rows are cropped,
so the result equals the dense product exactly.  Storage accounting counts the
padded blocks in full, because that is what is stored.

Only the blocks that survived pruning are stored: the BSR arrays are built from
the block mask, never by scanning values, so a surviving block that happens to
hold zeros is still stored and the structure equals the pruning pattern.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from ..blocks import as_matrix, block_grid, block_mask_of, check_block_size, to_blocks

INDEX_DTYPE = np.int32


def padded_shape(shape, k: int) -> tuple[int, int]:
    R, C = block_grid(shape, k)
    return R * k, C * k


def _matrix_and_mask(weight, k, block_mask):
    k = check_block_size(k)
    matrix = as_matrix(torch.as_tensor(weight)).detach().cpu()
    if block_mask is None:
        block_mask = block_mask_of(matrix, k)
    block_mask = torch.as_tensor(block_mask, dtype=torch.bool).cpu()
    if tuple(block_mask.shape) != block_grid(matrix.shape, k):
        raise ValueError(
            f"block mask of shape {tuple(block_mask.shape)} does not match the {block_grid(matrix.shape, k)} "
            f"grid of a {tuple(matrix.shape)} weight with k={k}"
        )
    return k, matrix, block_mask


def bsr_arrays(weight, k: int, block_mask=None):
    """(data (nnzb, k, k), indices (nnzb,), indptr (R+1,), padded shape) of a weight."""
    k, matrix, block_mask = _matrix_and_mask(weight, k, block_mask)
    tiles = to_blocks(matrix, k)  # (R, C, k, k), zero-padded
    data = tiles[block_mask].numpy()
    rows, cols = np.nonzero(block_mask.numpy())  # row-major: sorted by row, then col
    indices = cols.astype(INDEX_DTYPE)
    indptr = np.zeros(block_mask.shape[0] + 1, dtype=INDEX_DTYPE)
    np.cumsum(np.bincount(rows, minlength=block_mask.shape[0]), out=indptr[1:])
    return data, indices, indptr, padded_shape(matrix.shape, k)


def to_scipy_bsr(weight, k: int, block_mask=None) -> sp.bsr_matrix:
    """The weight as ``scipy.sparse.bsr_matrix`` with blocksize (k, k), zero-padded."""
    data, indices, indptr, shape = bsr_arrays(weight, k, block_mask)
    return sp.bsr_matrix((data, indices, indptr), shape=shape, blocksize=(k, k))


def to_scipy_csr(weight) -> sp.csr_matrix:
    """The weight (unpadded) as ``scipy.sparse.csr_matrix`` of its non-zeros."""
    m = sp.csr_matrix(as_matrix(torch.as_tensor(weight)).detach().cpu().numpy())
    m.indices = m.indices.astype(INDEX_DTYPE)
    m.indptr = m.indptr.astype(INDEX_DTYPE)
    return m


@contextlib.contextmanager
def quiet_sparse_beta():
    """Silence torch's "sparse BSR/CSR tensor support is in beta" warning (and only
    that one) inside the block; the study uses those formats knowingly."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse (BSR|CSR) tensor support is in beta state")
        yield


def to_torch_bsr(weight, k: int, block_mask=None) -> torch.Tensor:
    """The weight as a torch sparse BSR tensor with blocksize (k, k), zero-padded."""
    data, indices, indptr, shape = bsr_arrays(weight, k, block_mask)
    dtype = torch.as_tensor(weight).dtype
    with quiet_sparse_beta():
        return torch.sparse_bsr_tensor(
            torch.from_numpy(indptr.astype(np.int64)),
            torch.from_numpy(indices.astype(np.int64)),
            torch.from_numpy(np.ascontiguousarray(data)).to(dtype).reshape(-1, k, k),
            size=shape,
            check_invariants=False,
        )


@dataclass(frozen=True)
class Storage:
    """Bytes needed to store one weight matrix in each format."""

    dense: int
    csr: int
    bsr: int
    nnz: int
    nnz_blocks: int


def storage_bytes(weight, k: int, block_mask=None) -> Storage:
    """Bytes of dense, CSR and BSR storage (values + index arrays, int32 indices).

    Values are counted at the weight's dtype; BSR includes the padding of partial
    edge blocks, CSR stores only the non-zero values."""
    bsr = to_scipy_bsr(weight, k, block_mask)
    csr = to_scipy_csr(weight)
    matrix = as_matrix(torch.as_tensor(weight))
    item = matrix.element_size()
    return Storage(
        dense=matrix.numel() * item,
        csr=csr.nnz * item + csr.indices.nbytes + csr.indptr.nbytes,
        bsr=bsr.data.size * item + bsr.indices.nbytes + bsr.indptr.nbytes,
        nnz=int(csr.nnz),
        nnz_blocks=int(bsr.indices.size),
    )
