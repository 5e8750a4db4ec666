"""The floors of the package: lower ones never import upper ones (a fresh interpreter each)."""

from __future__ import annotations

import subprocess
import sys

import pytest

#: (what is imported, package prefixes it must not pull in)
FLOORS = [
    (
        "smner.data.batching, smner.data.conll, smner.data.boxes, smner.data.images",
        ("smner.encoders", "smner.model", "smner.inference", "smner.training"),
    ),
    (
        "smner.processor, smner.saved_folder, smner.config",
        # "smner.model." with its dot: smner.model_config is of this floor
        ("smner.model.", "smner.inference", "smner.predict", "smner.training", "smner.serve"),
    ),
    ("smner.predict, smner.inference", ("smner.training", "smner.distributed")),
    ("smner.model", ("smner.inference", "smner.predict", "smner.training", "smner.serve")),
]


@pytest.mark.parametrize(("modules", "forbidden"), FLOORS)
def test_lower_floors_do_not_import_upper_ones(modules: str, forbidden: tuple[str, ...]) -> None:
    code = (
        f"import sys, {modules}\n"
        f"bad = sorted(m for m in sys.modules if m.startswith({forbidden!r}))\n"
        "print(' '.join(bad))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "", f"{modules} imports {result.stdout.strip()}"
