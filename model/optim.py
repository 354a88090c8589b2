"""The optimizer and learning-rate schedule a plan asks for.

One factory for both training paths (`model.fitting`'s Keras `fit` and
`model.distributed`'s custom loop), so a run on several workers follows the
same schedule as one on a single machine: Adam, a linear warm-up from 0 to
the plan's learning rate over its warm-up steps, then cosine decay to 1% of
it by the end of the planned steps.
"""

from __future__ import annotations

import keras

from model.plan import Plan

# Cosine decay ends at this fraction of the peak learning rate, not at 0: the
# last planned steps still learn a little.
FINAL_LEARNING_RATE_SHARE = 0.01


def schedule_for(plan: Plan) -> keras.optimizers.schedules.LearningRateSchedule:
    """Warm-up (when the plan has warm-up steps), then cosine decay over the rest.

    Args:
        plan: the run's plan; its `learning_rate` is the peak, its
            `warmup_steps` the warm-up and its `total_steps` the whole run.

    Returns:
        A schedule mapping the optimizer's step number to a learning rate.
    """
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if plan.warmup_steps else plan.learning_rate,
        decay_steps=max(1, plan.total_steps - plan.warmup_steps),
        alpha=FINAL_LEARNING_RATE_SHARE,
        warmup_target=plan.learning_rate if plan.warmup_steps else None,
        warmup_steps=plan.warmup_steps,
    )


def optimizer_for(plan: Plan) -> keras.optimizers.Optimizer:
    """Adam on `schedule_for(plan)`; build it in a strategy's scope to distribute it."""
    return keras.optimizers.Adam(schedule_for(plan))
