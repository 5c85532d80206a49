"""Fingerprinted feature caches: the file format between ``extract`` and ``probe``."""

from medfm.cache.fingerprint import describe_difference, fingerprint
from medfm.cache.store import FORMAT, FORMAT_VERSION, FeatureCache, SplitLayout, ZarrCacheWriter, export_h5

__all__ = ["FORMAT", "FORMAT_VERSION", "FeatureCache", "SplitLayout", "ZarrCacheWriter", "export_h5",
           "fingerprint", "describe_difference"]
