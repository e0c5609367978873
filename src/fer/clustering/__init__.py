"""Expression-guided clustering of an unlabelled face corpus (M4, Fang et al., Sensors 2023):
FAISS k-means over memory-mapped embeddings (``kmeans``), guided pseudo-labelling
(``guided``), streamed embedding (``embed``), evaluation against hidden truth
(``quality``, evaluation only) and 2-D maps for the report (``map2d``)."""

from fer.clustering.guided import (
    PseudoLabels,
    guided_pseudo_labels,
    read_pseudo_labels,
    select_pseudo_labels,
    write_pseudo_labels,
)
from fer.clustering.kmeans import KMeansResult, assign_batched, faiss_kmeans

__all__ = [
    "KMeansResult",
    "PseudoLabels",
    "assign_batched",
    "faiss_kmeans",
    "guided_pseudo_labels",
    "read_pseudo_labels",
    "select_pseudo_labels",
    "write_pseudo_labels",
]
