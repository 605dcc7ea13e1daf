"""selfinstruct-kit: teach, reproduce and extend Self-Instruct (Wang et al., 2022, arXiv:2212.10560).

Data flows one way: seeds -> prompt (templates) -> completion (llm) -> records (parse) -> filters
-> run directory (runs) -> analyses -> figures.
"""

__version__ = "0.1.0"
