"""Visual tokenizers for BEiT: a k-means patch codebook fitted in the framework, and tokenizer files."""

from ssl_lightning.tokenizers.files import ExportedTokenizer, load_tokenizer, save_tokenizer
from ssl_lightning.tokenizers.kmeans import (
    PatchKMeansTokenizer,
    codebook_stats,
    collect_patches,
    fit_kmeans_tokenizer,
    kmeans,
    nearest_code,
)

__all__ = [
    "ExportedTokenizer",
    "PatchKMeansTokenizer",
    "codebook_stats",
    "collect_patches",
    "fit_kmeans_tokenizer",
    "kmeans",
    "load_tokenizer",
    "nearest_code",
    "save_tokenizer",
]
