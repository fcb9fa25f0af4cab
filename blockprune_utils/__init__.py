"""blockprune_utils: coarse-grained block pruning of neural networks, after Huang et
al., "Coarse-Grained Pruning of Neural Network Models Based on Blocky Sparse
Structure", Entropy 2021, 23(8):1042.

The pieces, each in its own module:

* :mod:`.blocks`   - k x k block division and block scores;
* :mod:`.pruning`  - which blocks to prune (per-layer fraction, target density, global);
* :mod:`.masks`    - parametrization masks that keep pruned weights exactly zero;
* :mod:`.schedule` - the iterative pruning rounds (:class:`BlockPruner`);
* :mod:`.bsr`      - BSR (scipy and torch) conversion, BSR inference, storage bytes;
* :mod:`.models`, :mod:`.data`, :mod:`.train` - networks, data, training;
* :mod:`.cache`    - the results cache (rows under a config hash, atomic writes).
"""
from .blocks import as_matrix, block_grid, block_mask_of, block_scores, expand_block_mask, to_blocks
from .bsr import BSRLinear, storage_bytes, to_bsr_model, to_scipy_bsr, to_scipy_csr, to_torch_bsr
from .masks import dense_state_dict, get_mask, load_masked_state_dict, remove_masks, set_mask
from .pruning import prune_fraction, prune_global, prune_to_density
from .schedule import BlockPruner, layer_densities, total_density

__all__ = [
    "as_matrix", "block_grid", "block_mask_of", "block_scores", "expand_block_mask", "to_blocks",
    "BSRLinear", "storage_bytes", "to_bsr_model", "to_scipy_bsr", "to_scipy_csr", "to_torch_bsr",
    "dense_state_dict", "get_mask", "load_masked_state_dict", "remove_masks", "set_mask",
    "prune_fraction", "prune_global", "prune_to_density",
    "BlockPruner", "layer_densities", "total_density",
]
__version__ = "0.1.0"
