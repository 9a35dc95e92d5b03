"""Vanilla training: cross-entropy only, no teacher."""
from tekapbench.methods.base import METHODS, MethodEntry, NoParams

METHODS.register("vanilla")(
    MethodEntry("vanilla", term=None, params=NoParams, ce_weight=1.0, weight=0.0,
                description="cross-entropy only (the 'Student' row of the tables)")
)
