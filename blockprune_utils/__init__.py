"""blockprune_utils: coarse-grained block pruning of neural networks, after Huang et
al., "Coarse-Grained Pruning of Neural Network Models Based on Blocky Sparse
Structure", Entropy 2021, 23(8):1042.

The layout follows the data flow; imports only point down it:

* the method: :mod:`.blocks` (k x k blocks, scores), :mod:`.pruning` (which blocks),
  :mod:`.masks` (masks that keep pruned weights zero), :mod:`.schedule`
  (:class:`BlockPruner`, the prune -> retrain loop); :mod:`.models`, :mod:`.data`,
  :mod:`.train`;
* :mod:`.bsr` - BSR storage and inference (conversion, BSR layers and models, the
  lean numpy path, numba kernels, automatic backend choice);
* :mod:`.infra` - paths, the results store, provenance, seeds, figure saving;
* :mod:`.studies` - the LeNet and CIFAR-10 studies on one skeleton;
  :mod:`.bench` - the BSR vs CSR vs dense benchmark; :mod:`.engine` runs a study's
  tasks (in-process or on Dask); :mod:`.sweep` is the command line;
* :mod:`.plots` - plots that take result rows.
"""
from .blocks import as_matrix, block_grid, block_mask_of, block_scores, expand_block_mask, to_blocks
from .bsr import BSRLinear, storage_bytes, to_bsr_model, to_scipy_bsr, to_scipy_csr, to_torch_bsr
from .masks import compact_state_dict, dense_state_dict, density, get_mask, load_masked_state_dict, remove_masks, set_mask
from .pruning import prune_fraction, prune_global, prune_to_density
from .schedule import BlockPruner, layer_densities, prune_retrain

__all__ = [
    "as_matrix", "block_grid", "block_mask_of", "block_scores", "expand_block_mask", "to_blocks",
    "BSRLinear", "storage_bytes", "to_bsr_model", "to_scipy_bsr", "to_scipy_csr", "to_torch_bsr",
    "compact_state_dict", "dense_state_dict", "density", "get_mask", "load_masked_state_dict", "remove_masks", "set_mask",
    "prune_fraction", "prune_global", "prune_to_density",
    "BlockPruner", "layer_densities", "prune_retrain",
]
__version__ = "0.2.0"
