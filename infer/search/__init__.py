"""Test-time search procedures, one module per procedure, each a plain
``run(problems, engine, reward, budget, config) -> list[SearchResult]``.

Shared types live in ``twinloop.infer.search.common`` (Problem, Budget, SearchConfig, SearchResult) and
``twinloop.infer.search.stepper`` (Stepper). Modules are imported by name, e.g.
``importlib.import_module("twinloop.infer.search.best_of_n")``.
"""
from twinloop.infer.search.common import Budget, Candidate, Problem, SearchConfig, SearchResult, SearchUsage
from twinloop.infer.search.stepper import Stepper

__all__ = ["Budget", "Candidate", "Problem", "SearchConfig", "SearchResult", "SearchUsage", "Stepper"]
