"""Training on several workers (or GPUs): `python -m model.train --distributed`.

`tf.distribute.MultiWorkerMirroredStrategy` reads the cluster from TF_CONFIG
(no TF_CONFIG: one worker, every local GPU). Each replica holds a copy of the
model; every step all-reduces the gradients, so the copies stay identical.

Keras 3.15's `model.fit` fails under this strategy ("Attempt to convert a value
(PerReplica...)", keras-team/keras#20585), so training here is a custom loop
(`model.distributed_loop`: `strategy.run` + `tf.nn.compute_average_loss`) over
the same input pipeline, plan, learning-rate schedule and early stopping as
`model.fitting`:

- The plan's batch size is per replica; the global batch is that times the
  replicas, and an epoch is one pass of the global batch over the data.
- Each worker reads its own shard of the file list (every n-th file), so no
  image is decoded twice.
- Validation runs on every worker and the figures are averaged across
  workers, so every worker takes the same early-stopping decision.
- A worker that dies makes the others fail (TensorFlow's heartbeats notice
  within seconds); a step that waits longer than --collective-timeout seconds
  on a worker that is alive but stuck fails too (`model.step_watchdog`: one
  thread for the run, not TensorFlow's thread per collective op).
- A run that ends well ends on every worker at once (`leave_together`): a
  worker that left first would look crashed to the chief's coordination
  service, which logs "tasks have crashed" while the chief still exports.

The strategy must exist before any other TensorFlow op: `strategy()` is the
first thing `model.train` does with --distributed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.eager import context  # collective abort and barrier: no public API

from model.cli import TrainOptions
from model.data import ImageSet
from model.distributed_loop import Role, fit_loop
from model.fitting import BestWeights, Throughput
from model.plan import Plan
from model.step_watchdog import StepWatchdog

log = logging.getLogger("model.train")

# Errors a collective raises when a peer is gone (or never answers).
PEER_ERRORS = (
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.AbortedError,
    tf.errors.CancelledError,
    tf.errors.InternalError,
    tf.errors.UnknownError,
)


class ClusterConfigError(Exception):
    """The workers' settings do not describe a cluster; the message says why."""


class WorkerLost(Exception):
    """A collective failed: a peer died or stopped answering; the message says which."""


def tf_config_from_env(env: dict[str, str]) -> str | None:
    """TF_CONFIG built from VGGSERVE_WORKER_HOSTS ("host:port,host:port") and this
    worker's index (VGGSERVE_WORKER_INDEX, else JOB_COMPLETION_INDEX, which a
    Kubernetes Indexed Job sets in each pod): a manifest can then give every pod
    the same settings. None when TF_CONFIG is set or no hosts are named."""
    hosts = [h.strip() for h in env.get("VGGSERVE_WORKER_HOSTS", "").split(",") if h.strip()]
    if env.get("TF_CONFIG") or not hosts:
        return None
    index = env.get("VGGSERVE_WORKER_INDEX") or env.get("JOB_COMPLETION_INDEX")
    if index is None or not index.isdigit() or int(index) >= len(hosts):
        raise ClusterConfigError(
            f"VGGSERVE_WORKER_HOSTS names {len(hosts)} workers but this worker's index "
            f"(VGGSERVE_WORKER_INDEX or JOB_COMPLETION_INDEX) is {index!r}"
        )
    task = {"type": "worker", "index": int(index)}
    return json.dumps({"cluster": {"worker": hosts}, "task": task})


def strategy() -> tf.distribute.MultiWorkerMirroredStrategy:
    """The strategy for TF_CONFIG's cluster.

    No `CommunicationOptions(timeout_seconds=...)`: TensorFlow starts one
    sleeping thread per collective op for that timeout, thousands a minute
    (see `model.step_watchdog`, which bounds each step instead).
    """
    built = tf_config_from_env(dict(os.environ))
    if built is not None:
        os.environ["TF_CONFIG"] = built
    return tf.distribute.MultiWorkerMirroredStrategy()


def role_of(strat: tf.distribute.Strategy) -> Role:
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    workers = len(config.get("cluster", {}).get("worker", [])) or 1
    task = config.get("task", {})
    # "chief" as its own task type is not used here: worker 0 is the chief.
    index = int(task.get("index", 0)) if task.get("type", "worker") == "worker" else 0
    return Role(index, workers, strat.num_replicas_in_sync)


def weights_digest(model: keras.Model) -> str:
    """A short hash of every weight: workers in sync print the same one."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()[:16]


def fit(
    model: keras.Model,
    plan: Plan,
    train_set: ImageSet,
    val_set: ImageSet,
    options: TrainOptions,
    throughput: Throughput,
    strat: tf.distribute.Strategy,
    role: Role,
) -> tuple[dict[str, list[float]], BestWeights]:
    """`model.fitting.fit_phase`'s job under `strat`; `model` was built in its scope.

    Raises:
        WorkerLost: a collective failed (a peer died, or a step outlasted
            --collective-timeout).
    """
    watchdog = StepWatchdog(options.collective_timeout, _abort_collectives)
    try:
        with watchdog:
            return fit_loop(
                model, plan, train_set, val_set, options, throughput, strat, role, watchdog
            )
    except PEER_ERRORS as exc:
        log.error("a collective failed: %s", exc.message)  # TensorFlow's whole account
        raise WorkerLost(
            f"worker {role.index} of {role.workers}: training stopped because another worker "
            f"died or stopped answering ({watchdog.fired or _reason(exc, role.index)}); "
            f"restart every worker to train again (a step waits at most --collective-timeout "
            f"{options.collective_timeout:g} s)"
        ) from exc


def _abort_collectives(message: str) -> None:
    """Fails every collective this process waits on (and any later one)."""
    context.context().abort_collective_ops(tf.errors.DEADLINE_EXCEEDED, message)


def leave_together(role: Role, timeout_s: float) -> None:
    """Returns once every worker has called it (or after `timeout_s`, with a warning).

    The chief hosts the coordination service. A worker whose process ends
    while the chief still evaluates and exports stops sending heartbeats, and
    the service logs it as crashed ("tasks have crashed") although the run
    went well; a last barrier makes every worker end its run together.
    """
    if role.workers < 2:
        return
    try:
        context.context().wait_at_barrier("vggserve-run-end", int(timeout_s * 1000))
    except tf.errors.OpError as exc:
        log.warning(
            "worker %d of %d: the other workers did not reach the end of the run within %g s: %s",
            role.index,
            role.workers,
            timeout_s,
            " ".join((exc.message or type(exc).__name__).split())[:300],
        )


def _reason(exc: tf.errors.OpError, own_index: int) -> str:
    """One line out of TensorFlow's message (which embeds the graph's traceback):
    which worker failed, and how, when it says."""
    message = exc.message or ""
    text = " ".join(message.split())
    tasks = sorted(set(re.findall(r"/job:\w+/replica:\d+/task:(\d+)", text)) - {str(own_index)})
    peer = f"worker {', '.join(tasks)}" if tasks else "a worker"
    if "stopped sending heartbeats" in text:
        return f"{peer} stopped sending heartbeats"
    for sign in ("Connection refused", "failed to connect", "Connection reset"):
        if sign in text:
            return f"{peer}: {sign.lower()}"
    if isinstance(exc, tf.errors.DeadlineExceededError):
        return f"{peer} did not answer in time"
    # The first line that is not the traceback of the node that failed.
    lines = [line.strip() for line in message.splitlines()]
    said = [line for line in lines if line and not line.startswith(("Detected at node", "File"))]
    return f"{peer}: {said[-1][:200] if said else type(exc).__name__}"
