"""fer.metrics: numbers from predictions (numpy only, importable from any layer).

* :mod:`fer.metrics.classification`: accuracy, mean-class accuracy, macro-F1, confusion;
* :mod:`fer.metrics.stats`: paired tests of per-fold accuracies;
* :mod:`fer.metrics.summary`: per-fold metrics files -> one method summary.

Model-based evaluation (running one network to judge another's output) is
:mod:`fer.evaluation`.
"""
