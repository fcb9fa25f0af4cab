"""Infrastructure shared by every study: paths, the results store (rows under a
config hash, a declared row schema, atomic writes), provenance, seeds, saving
figures with their data and provenance, and a study's tasks and their runner."""
from .paths import REPO_ROOT, data_dir, figures_dir, quick_figures_dir, results_dir
from .provenance import PROVENANCE_COLUMNS, git_commit, provenance
from .seeds import derive_seed
from .store import ResultStore, Schema, atomic_write_bytes, atomic_write_text, config_hash, open_store, plain
from .tasks import SweepError, Task, run_tasks

__all__ = ["REPO_ROOT", "data_dir", "figures_dir", "quick_figures_dir", "results_dir",
           "PROVENANCE_COLUMNS", "git_commit", "provenance",
           "derive_seed", "ResultStore", "Schema", "atomic_write_bytes", "atomic_write_text", "config_hash",
           "open_store", "plain", "SweepError", "Task", "run_tasks"]
