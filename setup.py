"""The tworec distribution.

The product's folders live at the repository root (beam/, towers/, ranking/, search/, export/, serving/) so a
newcomer finds a feature by its folder name; they install as subpackages of one import namespace,
``tworec.beam``, ``tworec.towers`` and so on. ``tworec/`` itself holds what crosses folders: the data
contract, the run layout, settings, item text composition; ``cli/`` holds the ``tworec`` command.
"""
from setuptools import setup

FOLDERS = ("live", "beam", "towers", "ranking", "search", "evaluation", "export", "serving", "report", "cli")

# Pinned to the stack known to resolve together (see BUILD.md). TFRS needs Keras 2 (tf-keras).
INSTALL_REQUIRES = [
    "tensorflow==2.20.*",
    "tf-keras==2.20.*",
    "tensorflow-recommenders==0.7.7",
    "scann==1.4.2",
    "numpy>=2",
    "scipy",  # the exploration slot's propensity: the winner's Beta tail once per answer
    "apache-beam[tfrecord]==2.77.*",
    "pyarrow",
    "google-crc32c",  # fast TFRecord checksums in Beam (pure-Python fallback is ~20x slower)
    "tritonclient[grpc]",
    "grpcio",
    "grpcio-tools",
    "grpcio-health-checking",
    "grpcio-reflection",
    "tokenizers",
    "safetensors",
    "tqdm",
    "matplotlib",
    "redis",  # the client of the live state store several gateway replicas share
    "bm25s==0.3.*",  # search's lexical leg: a maintained BM25 (numpy/scipy only)
    "PyStemmer",  # English stemming for BM25
    "threadpoolctl",  # the gateway caps numpy's BLAS threads (requests already run in parallel)
]

# torch is only the reference for the MiniLM parity test; 2.13.0 is a CPU wheel on this machine image.
# selenium drives Debian's chromium (installed by `make test`) for the report's browser test.
TEST_REQUIRES = ["pytest", "pytest-timeout", "hypothesis", "cryptography", "transformers>=5,<6", "torch==2.13.0",
                 "selenium"]

setup(
    name="tworec",
    version="0.1.0",
    description="Two-stage recommender: Beam data pipeline, TFRS two-tower retrieval, DCN ranker, Triton + gRPC serving",
    python_requires=">=3.11,<3.12",
    packages=["tworec"]
    + [f"tworec.{f}" for f in FOLDERS]
    + ["tworec.beam.sources"],
    package_dir={"tworec": "tworec", **{f"tworec.{f}": f for f in FOLDERS}},
    package_data={"tworec.beam.sources": ["*.txt"], "tworec.serving": ["proto/*.proto"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRES},
    entry_points={"console_scripts": ["tworec=tworec.cli:main"]},
)
