"""Module paths of the flat layout, importable for one more release with a DeprecationWarning.

``import smner.inference`` still works and returns :mod:`smner.predict.loop`; new code imports
the new path. The finder is registered when :mod:`smner` is imported.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from importlib.machinery import ModuleSpec
from types import ModuleType

#: old module -> its home in the folder-per-job layout
MOVED_MODULES = {
    "smner.box_targets": "smner.training.targets",
    "smner.card": "smner.saved.card",
    "smner.card_render": "smner.saved.card_render",
    "smner.config_check": "smner.config.check",
    "smner.model_config": "smner.config.model",
    "smner.dataframe": "smner.data.frames",
    "smner.demo": "smner.commands.demo_run",
    "smner.distributed": "smner.training.distributed",
    "smner.error_analysis": "smner.evaluation.error_analysis",
    "smner.feature_cache": "smner.predict.feature_cache",
    "smner.grounding": "smner.evaluation.grounding",
    "smner.heatmap": "smner.predict.heatmaps",
    "smner.hub": "smner.saved.hub",
    "smner.images_input": "smner.predict.image_input",
    "smner.inference": "smner.predict.loop",
    "smner.inputs": "smner.data.posts",
    "smner.metrics": "smner.evaluation.metrics",
    "smner.optimization": "smner.training.optimization",
    "smner.pointing": "smner.evaluation.pointing",
    "smner.predict_job": "smner.predict.job",
    "smner.processor": "smner.processing.processor",
    "smner.quantize": "smner.model.quantize",
    "smner.records": "smner.data.records",
    "smner.records.read": "smner.data.records.read",
    "smner.records.write": "smner.data.records.write",
    "smner.records.parquet": "smner.data.records.parquet",
    "smner.run_folder": "smner.training.run_folder",
    "smner.runlock": "smner.training.run_lock",
    "smner.saved_folder": "smner.saved.folder",
    "smner.spans": "smner.data.spans",
    "smner.streaming": "smner.predict.streaming",
    "smner.training_data": "smner.training.data",
    "smner.workers": "smner.predict.workers",
    "smner.data.batching": "smner.processing.batching",
}


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers an old module path with the module at its new path (the same object)."""

    def find_spec(
        self, fullname: str, path: object = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        new = MOVED_MODULES[spec.name]
        warnings.warn(
            f"{spec.name} is deprecated and will be removed in the next release; "
            f"import {new} instead",
            DeprecationWarning,
            stacklevel=3,
        )
        return importlib.import_module(new)

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module is the new one, already imported."""


def register() -> None:
    """Put the finder first on ``sys.meta_path`` (once per interpreter)."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder())
