"""Evaluation: S2 and L(z) (``correlation``), error rates, floors and baselines (``compare``), the evaluation
protocols (``protocol``, ``report``) and drift within one volume (``drift``)."""
