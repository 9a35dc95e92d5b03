"""Modifiers wrap a base method's loss term and change the teacher signal it sees."""
from tekapbench.modifiers.tekap import TeKAP, TeKAPSettings

__all__ = ["TeKAP", "TeKAPSettings"]
