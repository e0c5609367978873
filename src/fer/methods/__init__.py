"""fer.methods: one module per compared method, each exposing a per-fold entry point.

A method module holds its networks' wiring, its loss call and its training step; the
per-fold protocol around it (train on ``train``, select on ``val`` only, test once at the
end, write model / metrics / curve) is ``fer.training.protocol``.
"""
