"""Infrastructure shared by every study: paths, the results store (rows under a
config hash, a declared row schema, atomic writes), provenance, seeds, and saving
figures with their data and provenance."""
from .paths import REPO_ROOT, data_dir, figures_dir, quick_figures_dir, results_dir
from .provenance import PROVENANCE_COLUMNS, git_commit, provenance
from .seeds import derive_seed
from .store import ResultStore, Schema, atomic_write_bytes, atomic_write_text, config_hash, open_store, plain

__all__ = ["REPO_ROOT", "data_dir", "figures_dir", "quick_figures_dir", "results_dir",
           "PROVENANCE_COLUMNS", "git_commit", "provenance",
           "derive_seed", "ResultStore", "Schema", "atomic_write_bytes", "atomic_write_text", "config_hash",
           "open_store", "plain"]
