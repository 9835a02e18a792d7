"""Reports: self-contained HTML pages built from the analyses' result objects.

A report is a list of ``Section`` objects. A section builder takes result objects, draws figures
(seaborn/matplotlib) and renders a Jinja2 template with autoescaping; it never recomputes an
analysis, and imports no analysis code. Adding a section is one function and one template in
``reports/templates/sections``.
"""

from reports._captions_section import captions_section
from reports._code_plane_section import code_plane_section
from reports._codes_section import codes_section
from reports._colorization_section import colorization_section
from reports._finetune_section import finetune_section
from reports._greedy_section import greedy_section
from reports._colors import model_colors
from reports._language_section import masked_lm_section
from reports._function_section import function_views_section
from reports._layers_section import layers_section
from reports._neighbours_section import neighbour_mosaic, neighbours_section
from reports._render import (
    figure_to_data_uri,
    image_grid,
    image_to_data_uri,
    render_fragment,
    table_html,
)
from reports._report import Report, Section
from reports._measures_section import measures_section
from reports._similarity_section import similarity_section
from reports._subspace_section import subspace_section
from reports._transfer_section import transfer_section
from reports._words_section import words_section
from reports._units_section import save_unit_grids, unit_grid_paths, units_section
from reports._zoo_section import ModelSummary, Reconstructions, zoo_section

__all__ = [
    "Report",
    "Section",
    "render_fragment",
    "figure_to_data_uri",
    "image_to_data_uri",
    "image_grid",
    "table_html",
    "model_colors",
    "zoo_section",
    "ModelSummary",
    "Reconstructions",
    "layers_section",
    "similarity_section",
    "measures_section",
    "units_section",
    "save_unit_grids",
    "unit_grid_paths",
    "subspace_section",
    "transfer_section",
    "words_section",
    "masked_lm_section",
    "captions_section",
    "neighbour_mosaic",
    "neighbours_section",
    "function_views_section",
    "code_plane_section",
    "codes_section",
    "colorization_section",
    "finetune_section",
    "greedy_section",
]
