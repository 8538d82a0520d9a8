"""The activation cache on disk: one forward pass over an evaluation set, stored as safetensors shards
(:mod:`nodeprobe.cache.store`), read back by every study.  (The in-memory per-batch collector is
:class:`nodeprobe.hooks.SiteCache`.)

Example:
    >>> from nodeprobe.cache import get_or_build_cache               # doctest: +SKIP
    >>> reader = get_or_build_cache(model, eval_set, ("readout",))   # doctest: +SKIP
"""

from nodeprobe.cache.store import (
    DEFAULT_ROOT,
    DTYPES,
    FORMAT_VERSION,
    MANIFEST,
    SITES,
    CacheReader,
    build_cache,
    cache_is_current,
    default_cache_dir,
    get_or_build_cache,
    load_cache,
    model_fingerprint,
    parse_sites,
    site_hooks,
    site_means,
)

__all__ = [
    "CacheReader", "DEFAULT_ROOT", "DTYPES", "FORMAT_VERSION", "MANIFEST", "SITES", "build_cache", "cache_is_current",
    "default_cache_dir", "get_or_build_cache", "load_cache", "model_fingerprint", "parse_sites", "site_hooks",
    "site_means",
]
