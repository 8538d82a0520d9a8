"""Report functions: a cache (and, where needed, the model) in, a dataclass of numbers out.

One function per report; the CLI (:mod:`nodeprobe.cli.reports`) renders them with
:mod:`nodeprobe.render.views` and writes their JSON; the reproduce pipeline calls them directly.

Example:
    >>> from nodeprobe.cache import get_or_build_cache                            # doctest: +SKIP
    >>> cache = get_or_build_cache(model, eval_set, sites=("readout", "resid"))   # doctest: +SKIP
    >>> rep = specialization_report(cache)            # every readout node         # doctest: +SKIP
    >>> rep.families[0].coverage                                                   # doctest: +SKIP
"""

import importlib

_LAZY = {
    "APTReport": "apt", "apt_report": "apt",
    "BlocksReport": "blocks", "blocks_report": "blocks",
    "CooperationReport": "cooperation", "cooperation_report": "cooperation",
    "HullReport": "hull", "hull_report": "hull",
    "ProbeSettings": "lens",
    "SpecializationReport": "specialization", "specialization_report": "specialization",
}

__all__ = [
    "APTReport",
    "BlocksReport",
    "CooperationReport",
    "HullReport",
    "ProbeSettings",
    "SpecializationReport",
    "apt_report",
    "blocks_report",
    "cooperation_report",
    "hull_report",
    "specialization_report",
]


def __getattr__(name: str):
    """The report functions, imported on first access (PEP 562): ``nodeprobe.studies._common``, the
    argument checks, stays importable without torch."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nodeprobe.studies' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
