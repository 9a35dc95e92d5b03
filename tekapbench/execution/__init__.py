"""Executors: where and how a suite's runs are executed. ``local`` (this machine: in order, or one worker
process per GPU) and ``slurm`` (an existing Slurm cluster, through submitit). One file each, registered in
EXECUTORS; every executor works through the same claims and records, so they can be mixed and rerun."""
from tekapbench.execution.base import EXECUTORS, Request, register_executor
from tekapbench.registry import import_submodules

import_submodules(__name__)

__all__ = ["EXECUTORS", "Request", "register_executor"]
