"""blockprune_utils: coarse-grained block pruning of neural networks, after Huang et
al., "Coarse-Grained Pruning of Neural Network Models Based on Blocky Sparse
Structure", Entropy 2021, 23(8):1042.

The modules follow the data flow, and imports only point down it; the 'Layout' section of
README.md is the map of every module.  The names below are the method's public API.
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
