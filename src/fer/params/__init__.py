"""fer.params: params.yaml in typed form, with no torch and no knowledge of Snakemake.

* :mod:`fer.params.sections`: one frozen dataclass per params.yaml section;
* :mod:`fer.params.coerce`: the one helper that builds them from mappings (``build``)
  and writes them back (``to_dict``);
* :mod:`fer.params.core`: schema validation, :class:`DeclaredParams` (a stage reads only
  the keys its rule declares);
* :mod:`fer.params.rows`: the ablation rows and the keys each declares;
* :mod:`fer.params.preset`: merging a preset into params.yaml.
"""

from fer.params import coerce, core, preset, rows, sections
from fer.params.coerce import *  # noqa: F403
from fer.params.core import *  # noqa: F403
from fer.params.preset import *  # noqa: F403
from fer.params.rows import *  # noqa: F403
from fer.params.sections import *  # noqa: F403

__all__ = [*coerce.__all__, *core.__all__, *preset.__all__, *rows.__all__, *sections.__all__]
