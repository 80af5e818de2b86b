"""Every optional study step in one place, run and rendered in the order of ``STUDY_STEPS``.

Why a list: ``study.analyze_frame`` runs each step of ``STUDY_STEPS`` (after the fixed spine: fit, bootstrap,
held-out check, law comparison, scaling check, plots), fit.json collects their fields and report.md renders
their sections in this order, none of them by name. An analysed study kind is its sweep YAML, its step module
(``FIELDS``, a run function returning a ``StepResult``, its report sections; see ``base.Step``) and one line
here. A step may read the results of the steps before it (``StudyContext.done``): the cutoff scan runs only
without conditions.
"""

from __future__ import annotations

from . import cutoff, downstream, efficiency, lr_rule, prediction, regimes
from .base import Step, StepResult, StudyContext
from .conditions import step as conditions

STUDY_STEPS: tuple[Step, ...] = (
    conditions.STEP,  # domain / mixture / quality axes
    downstream.STEP,  # downstream tasks against U (downstream=suite)
    lr_rule.STEP,  # best lr per size and its rule (a study sweeping optim.lr)
    regimes.STEP,  # data- or model-limited runs (Chinchilla-type fits)
    cutoff.STEP,  # from which size on the law extrapolates (reads the conditions step)
    prediction.STEP,  # the pre-registered prediction scored on its target runs (analysis.predict)
    efficiency.STEP,  # training FLOPs / (peak x wall) and where the machine's time went (the records)
)

#: fit.json's field order (and its documented table's) predates the step list: the steps named here keep
#: their fields' places; any other step's fields follow, in list order
FIT_JSON_ORDER = ("conditions", "cutoff", "regimes", "lr_rule", "downstream")

__all__ = ["FIT_JSON_ORDER", "STUDY_STEPS", "Step", "StepResult", "StudyContext", "run_steps", "step_fields"]


def run_steps(ctx: StudyContext, steps: tuple[Step, ...] = STUDY_STEPS) -> list[StepResult]:
    """Run every step in order; each sees the results of those before it in ``ctx.done``."""
    for step in steps:
        ctx.done[step.name] = step.run(ctx)
    return [ctx.done[step.name] for step in steps]


def step_fields(steps: tuple[Step, ...] = STUDY_STEPS) -> dict[str, str]:
    """fit.json field -> documentation of every step's fields, in fit.json's order."""
    rank = {name: i for i, name in enumerate(FIT_JSON_ORDER)}
    ordered = sorted(steps, key=lambda s: rank.get(s.name, len(rank)))  # stable: new steps in list order
    return {name: doc for s in ordered for name, doc in s.fields.items()}
