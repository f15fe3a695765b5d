"""Test-time search procedures, one module per procedure, each a plain
``run(problems, engine, reward, budget, config) -> list[SearchResult]`` with its config class as
``Config``. Import them by name (``twinloop eval --method NAME`` does):

=====================  ==========================================================  =========================
module                 procedure                                                   reward it needs
=====================  ==========================================================  =========================
greedy                 temperature-0 baseline                                      none
majority               self-consistency: mode of extracted answers                 none
weighted_majority      reward summed per answer                                    outcome
best_of_n, worst_of_n  argmax / argmin reward (worst-of-N: jailbreak evaluation)   outcome
beam_search, dvts      step-level tree search, optional k-step lookahead           process (step_scores)
particle_filter, epf   particle filtering; ePF adds entropic annealing/look-ahead   process
astar                  A*-decoding, f = g + h, h = 1 - PRM                          process
v1_tournament          V1 pairwise tournament, μ scores, B·N comparisons            pairwise verifier (judge)
grm_vote, grm_meta_vote  SPCT voting@k, meta-RM-guided voting                      generative RM (judge_many)
adaptive_selfeval      growing batches, early stop on P(better), pruning            self-eval probe (p_better)
iterative_refine       verifier-guided refinement rounds (IAD)                      outcome
compute_optimal        per-difficulty-bin choice of procedure and budget           outcome (difficulty)
=====================  ==========================================================  =========================

Each procedure module declares what it needs: ``NEEDS_REWARD`` (``outcome``, ``process``, a judge alias, or
None) and ``BUDGET_FREE`` (one sample whatever the budget); `twinloop eval` and the quickstart read them. The
shared pieces are private modules: ``_common`` (Problem, Budget, SearchConfig, SearchResult, accounting,
selection), ``_stepper`` (Stepper), ``_paths`` (token-id prefixes for step-level search: ``SearchPath``),
``_sampling``, ``_tree``, ``_particles``, ``_resampling``.
"""
from twinloop.infer.search._common import Budget, Candidate, Problem, SearchConfig, SearchResult, SearchUsage
from twinloop.infer.search._stepper import Stepper

__all__ = ["Budget", "Candidate", "Problem", "SearchConfig", "SearchResult", "SearchUsage", "Stepper"]
