"""The experiment configs, shipped with the package as ``mdgl_analysis.presets``.

Every ``NAME.toml`` of this folder is the preset ``NAME`` (``mdgl train --preset NAME``;
``mdgl presets`` lists them with their ``description``). pyproject.toml maps the package
``mdgl_analysis.presets`` to this folder, so a checkout, an editable install and an installed
wheel read the same files (``mdgl_analysis.config.PRESETS``). This file only makes the folder a
package that an editable install can import; it holds no code.
"""
