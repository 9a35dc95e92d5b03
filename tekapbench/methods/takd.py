"""TAKD (Mirzadeh et al., AAAI 2020): knowledge distillation through a chain of teacher assistants.

Each assistant is distilled (KD) from the network before it in the chain, the student from the last
assistant. The loss is KD's; what makes TAKD is the topology of its teachers, which the suite's pair
declares (``assistants = [...]``) and the planner turns into runs, each assistant trained once and shared.
"""
from tekapbench.methods.base import register_method
from tekapbench.methods.kd import KDLoss, KDParams

register_method("takd", params=KDParams, ce_weight=0.1, weight=0.9, teachers="chain",
                description="KD along a chain of teacher assistants")(KDLoss)
