"""The graded lab (notebook 10): automatic checks (:mod:`.checks`), the design task
(:mod:`.design`) and the teacher's tools (:mod:`.build`: the student version and
grading; ``python -m blockprune_utils.lab``)."""
from .checks import TASKS, LabCheckError, grade, run_check
from .design import run_design

__all__ = ["TASKS", "LabCheckError", "grade", "run_check", "run_design"]
