"""Evaluations of trained models: one file each, registered in EVALUATIONS."""
from tekapbench.evaluations.base import EVALUATIONS, EvalContext, EvalParams, Skip, evaluation_key, register_evaluation
from tekapbench.registry import import_submodules

import_submodules(__name__)

__all__ = ["EVALUATIONS", "EvalContext", "EvalParams", "Skip", "evaluation_key", "register_evaluation"]
