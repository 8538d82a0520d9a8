"""Report functions: a cache (and, where needed, the model) in, a dataclass of numbers out.

One function per report; the CLI (:mod:`nodeprobe.cli.reports`) renders them with
:mod:`nodeprobe.render.views` and writes their JSON; the reproduce pipeline calls them directly.

Example:
    >>> from nodeprobe.cache import get_or_build_cache                            # doctest: +SKIP
    >>> cache = get_or_build_cache(model, eval_set, sites=("readout", "resid"))   # doctest: +SKIP
    >>> rep = specialization_report(cache)            # every readout node         # doctest: +SKIP
    >>> rep.families[0].coverage                                                   # doctest: +SKIP
"""

from nodeprobe.studies.apt import APTReport, apt_report
from nodeprobe.studies.blocks import BlocksReport, blocks_report
from nodeprobe.studies.cooperation import CooperationReport, cooperation_report
from nodeprobe.studies.hull import HullReport, hull_report
from nodeprobe.studies.lens import ProbeSettings
from nodeprobe.studies.specialization import SpecializationReport, specialization_report

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
