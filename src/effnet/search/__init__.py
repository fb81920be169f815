"""The scaling method as a tool: grid search of alpha, beta, gamma, and single-dimension curves."""
from effnet.search.grid import Candidate, grid_candidates, parse_values
from effnet.search.search import SearchConfig, run_search

__all__ = ["Candidate", "grid_candidates", "parse_values", "SearchConfig", "run_search"]
