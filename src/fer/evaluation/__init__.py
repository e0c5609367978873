"""fer.evaluation: judging generated images with other networks (expression accuracy under
a real-data recogniser, Frechet distance, identity diversity). Pure metrics are
:mod:`fer.metrics`."""
