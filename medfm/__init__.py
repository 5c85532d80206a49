"""medfm: which natural-domain foundation model transfers best to a medical classification task.

The pipeline has two stages that talk through files: ``extract`` runs a frozen backbone once
over a dataset and writes a fingerprinted feature cache (Zarr, or HDF5); ``probe`` trains cheap
heads from that cache. Each axis (backbones, datasets, heads, metrics) is one registry.
"""

__version__ = "0.1.0"
