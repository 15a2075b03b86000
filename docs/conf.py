from __future__ import annotations

project = "Flask-PostStack"
copyright = "2026, Flask-PostStack contributors"
author = "Flask-PostStack contributors"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_preserve_defaults = True
html_theme = "furo"
html_title = "Flask-PostStack"
exclude_patterns = ["_build"]
# No intersphinx: the docs build must not reach the network.
