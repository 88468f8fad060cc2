"""vae-engine: a TensorFlow 2 training engine for variational autoencoders."""

from setuptools import find_packages, setup

setup(
    name="vae-engine",
    version="0.1.0",
    description=("A low-level TensorFlow 2 training engine (compiled custom "
                 "loop, exact resume, export) shipped with MNIST-style VAEs."),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["engine", "engine.*", "models",
                                    "models.*", "flags", "flags.*"]),
    # The presets (`vae-engine --preset=iwae_vae`) travel with the package.
    package_data={"flags": ["presets/*.flags"]},
    install_requires=[
        "tensorflow>=2.16",  # Keras 3 as tf.keras.
        "tensorflow-datasets>=4.9",
        "importlib_resources",  # tensorflow-datasets 4.9 imports it.
        "tensorboard",  # tf.summary's implementation (TF 2.21 dropped it).
        "numpy",
        "absl-py",
        "matplotlib",
    ],
    extras_require={
        # Serving runtimes: TF Serving's protos (the export's warm-up
        # requests) and LiteRT's interpreter (tools/export.py --tflite).
        "serving": ["tensorflow-serving-api", "ai-edge-litert"],
        # pytest 9.2 silently breaks pytest-xdist's --dist loadgroup
        # (pytest-dev/pytest-xdist#1386; tests/test_tiers.py checks it).
        "test": ["pytest>=7,<9.2", "pytest-xdist", "hypothesis",
                 "tensorflow-serving-api", "ai-edge-litert"],
    },
    entry_points={
        # `vae-engine` trains; `vae-engine <tool>` runs a tool (evaluate,
        # sample, plot, export, chaos, launch_local, benchmark, ...).
        "console_scripts": ["vae-engine=engine.main:run"],
    },
)
