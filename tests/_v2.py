"""Constants of the METHODS v2 study tests (the caches are fixtures in tests/studies/conftest.py)."""

from nodeprobe.analysis.probe import FitSettings
from nodeprobe.studies.units import ReadoutSettings

LOW = dict(tau_recall=0.2, tau_lift=1.0, min_count=2)  # thresholds low enough that random units learn classes
FAST = ReadoutSettings(fit=FitSettings(epochs=5))  # block readouts, trained quickly
SITES = ("readout", "z", "resid", "mlp")
