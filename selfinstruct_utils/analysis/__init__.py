"""The paper's data analyses (Sec. 3, Appendix A.1): statistics, verb-noun diversity, ROUGE-L overlap,
lengths. Each takes a DataFrame from :func:`~selfinstruct_utils.analysis.datasets.load_dataset`."""

from .datasets import load_dataset
from .overlap import load_superni_test_tasks, seed_vs_test_overlap, similarity_to_seeds
from .stats import dataset_statistics, length_table

__all__ = [
    "load_dataset",
    "dataset_statistics",
    "length_table",
    "similarity_to_seeds",
    "seed_vs_test_overlap",
    "load_superni_test_tasks",
]
