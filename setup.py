"""Package metadata for speechbrain-sed-condmix."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def read_requirements():
    """Return the runtime requirements listed in requirements.txt."""
    lines = (HERE / "requirements.txt").read_text().splitlines()
    return [
        line.strip()
        for line in lines
        if line.strip() and not line.startswith("#")
    ]


setup(
    name="speechbrain-sed-condmix",
    version="0.1.0",
    description=(
        "Semi-supervised sound event detection for SpeechBrain: ATST-SED, "
        "ATST-SEDv2 (conditional mixup, embedding-level contrastive loss) "
        "and the DCASE CRNN with Mean Teacher."
    ),
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["speechbrain_sed_condmix*"]),
    install_requires=read_requirements(),
    extras_require={
        "dev": ["pytest>=8", "ruff>=0.12"],
        # Training dashboards (the recipes' `dashboard` key).
        "tensorboard": ["tensorboard>=2.14"],
        "wandb": ["wandb>=0.16"],
    },
    entry_points={
        "console_scripts": [
            "sed-mini-desed=speechbrain_sed_condmix.cli:mini_desed_main",
            "sed-prepare-desed=speechbrain_sed_condmix.cli:prepare_desed_main",
            "sed-export=speechbrain_sed_condmix.cli:export_main",
            "sed-import=speechbrain_sed_condmix.cli:import_main",
            "sed-detect=speechbrain_sed_condmix.cli:detect_main",
            "sed-tune=speechbrain_sed_condmix.search_cli:main",
        ],
    },
)
