"""The SCHEDULER parameter, defined once: where a tool's work units run (the tiled tools: column bands x row
ranges, patch rows; the population tools: frame pairs, frames).

Empty runs in-process, as without a cluster; ``local:N`` starts N worker processes on this machine for the
run; ``tcp://host:port`` (or ``tls://``) hands the units to a running Dask scheduler whose workers share the
input and output folders (:mod:`~satseg_plugin.core.distributed` parses and checks the value; docs/distributed.md
says how to start a cluster). Importing this module imports neither dask nor distributed.
"""

from __future__ import annotations

from typing import Any, Dict

from qgis.core import QgsProcessingContext, QgsProcessingParameterString

from ..core.distributed import SCHEDULER_PARAMETER

__all__ = ["SCHEDULER", "add_scheduler_parameter", "scheduler_value"]

#: The parameter's key in every algorithm that has it.
SCHEDULER = SCHEDULER_PARAMETER


def add_scheduler_parameter(algorithm: Any) -> None:
    """Add the advanced, optional SCHEDULER string parameter (default empty: in-process) to ``algorithm``."""
    param = QgsProcessingParameterString(
        SCHEDULER, algorithm.tr("Dask scheduler (empty = in-process; local:N = N worker processes here; "
                                "tcp://host:port = a running cluster)"), defaultValue="", optional=True)
    param.setHelp(algorithm.tr(
        "Where the work runs. Empty: in this process, as usual. local:N: N worker processes on this machine, "
        "started and stopped by the run. tcp://host:port or tls://host:port: the workers of a running Dask "
        "scheduler (dask-jobqueue on SLURM/PBS, dask-kubernetes, or started by hand), which must see the "
        "inputs (rasters, model and flow files) and the output folder at the same paths (shared storage). The "
        "outputs are the same as in-process. Needs the Python packages dask and distributed."))
    algorithm.add_advanced_parameter(param)


def scheduler_value(algorithm: Any, parameters: Dict[str, Any], context: QgsProcessingContext) -> str:
    """The SCHEDULER text as given (empty when unset); the engine parses it and names SCHEDULER in errors."""
    return (algorithm.parameterAsString(parameters, SCHEDULER, context) or "").strip()
