"""Masked-prediction pre-training and continued pre-training (HuBERT / MelHuBERT objective) with optax.

The loss is cross-entropy between the prediction head's logits and frame-level k-means targets, on masked
valid frames only. AdamW with linear warm-up then cosine decay, global-norm gradient clipping, data-parallel
over a ``('data',)`` mesh (batch sharded, parameters replicated; XLA reduces the gradients).

Everything that decides the trajectory is a function of ``(seed, step)``: the epoch permutation of
utterances, the crops and the span masks. Orbax checkpoints every ``checkpoint_every`` steps hold the
parameters, the optimizer state and the step, so a run killed at any point and resumed from its work
directory continues the same trajectory (tested).

Continued pre-training after pruning passes a fixed ``neuron_mask``: pruned neurons stay at zero and get
no gradient through ``h``. Its targets must be the ones the model was trained on:
:func:`jaxneurons.train.targets.continued_pretraining_data` regenerates them from the model's stored recipe.

Checkpoints are untrusted: each one stores a fingerprint of what it was computed from (model config and
starting weights, train config, neuron mask, data and targets). :meth:`Trainer.restore_latest` refuses a
checkpoint with another fingerprint (:class:`CheckpointMismatchError`), or with ``on_mismatch="fresh"``
deletes it and starts from step 0, so rerunning into a used work directory never resumes someone else's run.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxneurons.config_flags import field_help
from jaxneurons.models.blocks import make_linear
from jaxneurons.progress import ProgressBar
from jaxneurons.train.fingerprint import arrays_fingerprint, json_fingerprint, weights_fingerprint
from jaxneurons.train.masking import span_mask
from jaxneurons.train.targets import FRAME_HOP, TargetRecipe, check_recipe_fits

ON_MISMATCH = ("error", "fresh")
FINGERPRINT_ITEM = "fingerprint"
STATE_ITEM = "state"


class CheckpointMismatchError(RuntimeError):
    """A work directory's checkpoint was computed from another model, config, mask or data."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Pre-training hyper-parameters. Defaults suit the small bundled MelHuBERT on the synthetic corpus.

    The property-neuron study's continued pre-training used lr 1e-5, batch 4, mask_prob 0.7,
    mask_length 5, 512 k-means clusters (MelHuBERT); pass those for a faithful run on a real checkpoint.
    """

    steps: int = field_help(2000, "Optimizer steps.")
    batch_size: int = field_help(8, "Utterances per step (the property-neuron study's CPT: 4).")
    crop_seconds: float = field_help(4.0, "Random crop length per utterance.")
    learning_rate: float = field_help(5e-4, "Peak learning rate (the property-neuron study's CPT: 1e-5).")
    warmup_steps: int = field_help(200, "Linear warm-up steps.")
    end_learning_rate_ratio: float = field_help(0.05, "Cosine decay ends at this fraction of the peak.")
    weight_decay: float = field_help(0.01, "AdamW weight decay.")
    clip_norm: float = field_help(1.0, "Global gradient-norm clip.")
    mask_prob: float = field_help(0.7, "Span-mask probability (MelHuBERT: 0.7).")
    mask_length: int = field_help(5, "Span length in frames (MelHuBERT: 5).")
    seed: int = field_help(0, "Seed of initialisation, data order, crops and masks.")
    checkpoint_every: int = field_help(200, "Steps between checkpoints.")
    keep_checkpoints: int = field_help(2, "Checkpoints kept in the work directory.")
    log_every: int = field_help(20, "Steps between progress lines.")


@dataclasses.dataclass
class TrainData:
    """Utterances (16 kHz float32 audio) and their frame-level targets (int32, one per 20 ms model frame).

    ``recipe``: how the targets were made (stored with a trained model; checked against the encoder's head
    and frame geometry). ``reinit_head``: the targets are new clusters, so the encoder's own head is replaced
    by a freshly initialised one before training (see ``continued_pretraining_data``).
    """

    audio: Sequence[np.ndarray]
    targets: Sequence[np.ndarray]
    num_clusters: int
    recipe: TargetRecipe | None = None
    reinit_head: bool = False

    def __post_init__(self) -> None:
        if len(self.audio) != len(self.targets) or not self.audio:
            raise ValueError(f"TrainData: {len(self.audio)} utterances but {len(self.targets)} target arrays")
        if self.recipe is not None and self.recipe.num_clusters != self.num_clusters:
            raise ValueError(f"TrainData: {self.num_clusters} clusters but the recipe has {self.recipe.num_clusters}")
        for i, t in enumerate(self.targets):
            if len(t) and (int(np.min(t)) < 0 or int(np.max(t)) >= self.num_clusters):
                raise ValueError(f"TrainData: targets of utterance {i} outside [0, {self.num_clusters})")

    def rotated(self, offset: int) -> TrainData:
        """The same utterances starting at ``offset`` (new batches for the same compiled step)."""
        k = offset % len(self.audio)
        return dataclasses.replace(self, audio=list(self.audio[k:]) + list(self.audio[:k]),
                                   targets=list(self.targets[k:]) + list(self.targets[:k]))

    def fingerprint(self) -> str:
        """Content hash of audio, targets, cluster count, recipe and head choice."""
        return json_fingerprint([arrays_fingerprint(self.audio), arrays_fingerprint(self.targets),
                                 self.num_clusters, self.reinit_head,
                                 None if self.recipe is None else self.recipe.fingerprint()])


class MaskedPredictionModel(nnx.Module):
    """An encoder plus its masked-prediction head (the encoder's own ``final_proj`` if it has one)."""

    def __init__(self, encoder: nnx.Module, num_clusters: int, seed: int = 0, reinit_head: bool = False):
        own = getattr(encoder, "final_proj", None)
        if own is not None and own.out_features != num_clusters:
            raise ValueError(f"encoder head predicts {own.out_features} clusters, targets have {num_clusters}")
        if own is not None and reinit_head:
            # New clusters: the old head's output j would mean another cluster. Copy, never edit the caller's model.
            encoder = nnx.clone(encoder)
            encoder.final_proj = make_linear(encoder.config.hidden_size, num_clusters, nnx.Rngs(seed + 1))
        self.encoder = encoder
        self.head = None if own is not None else make_linear(
            encoder.config.hidden_size, num_clusters, nnx.Rngs(seed + 1)
        )

    def __call__(self, audio, lengths, time_mask, neuron_mask=None):
        out = self.encoder(audio, lengths, time_mask=time_mask, neuron_mask=neuron_mask)
        logits = self.encoder.predict(out) if self.head is None else self.head(out.last_hidden_state)
        return logits, out


def make_schedule(config: TrainConfig) -> optax.Schedule:
    decay_steps = max(config.steps - config.warmup_steps, 1)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.learning_rate,
        warmup_steps=config.warmup_steps,
        decay_steps=config.warmup_steps + decay_steps,
        end_value=config.learning_rate * config.end_learning_rate_ratio,
    )


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    return optax.chain(
        optax.clip_by_global_norm(config.clip_norm),
        optax.adamw(make_schedule(config), b1=0.9, b2=0.98, eps=1e-6, weight_decay=config.weight_decay),
    )


def _batch_indices(num_utts: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Utterances of ``step``: consecutive slices of a per-epoch seeded permutation (each utterance once per epoch)."""
    out = []
    for pos in range(step * batch_size, (step + 1) * batch_size):
        epoch, offset = divmod(pos, num_utts)
        out.append(np.random.default_rng((seed, epoch)).permutation(num_utts)[offset])
    return np.asarray(out)


def make_batch(data: TrainData, encoder: nnx.Module, config: TrainConfig, step: int) -> dict[str, np.ndarray]:
    """Audio crops (B, crop) + lengths + aligned targets (B, T) for ``step``; deterministic in (seed, step)."""
    crop = int(round(config.crop_seconds * 16000 / FRAME_HOP)) * FRAME_HOP
    num_frames = int(encoder.num_frames(crop))
    rng = np.random.default_rng((config.seed, step, 1))
    audio = np.zeros((config.batch_size, crop), np.float32)
    lengths = np.zeros((config.batch_size,), np.int32)
    targets = np.full((config.batch_size, num_frames), -1, np.int32)
    for row, i in enumerate(_batch_indices(len(data.audio), config.batch_size, config.seed, step)):
        wav, tgt = data.audio[i], data.targets[i]
        max_start_frame = max((len(wav) - crop) // FRAME_HOP, 0)
        f0 = int(rng.integers(0, max_start_frame + 1))
        piece = wav[f0 * FRAME_HOP: f0 * FRAME_HOP + crop]
        audio[row, : len(piece)] = piece
        lengths[row] = len(piece)
        n = min(int(encoder.num_frames(len(piece))), num_frames, max(len(tgt) - f0, 0))
        targets[row, :n] = tgt[f0: f0 + n]
    return {"audio": audio, "lengths": lengths, "targets": targets}


def _pure(tree: Any) -> Any:
    return jax.tree.map(np.asarray, tree)


@functools.lru_cache(maxsize=16)
def _jitted_step(graphdef: nnx.GraphDef, config: TrainConfig, mesh: Mesh, with_mask: bool):
    """The jitted train step; cached so trainers of the same model and config share one compilation."""
    tx = make_optimizer(config)

    def loss_fn(params, rest, batch, key, neuron_mask):
        task = nnx.merge(graphdef, params, rest)
        frames = batch["targets"].shape[1]
        lengths = task.encoder.num_frames(batch["lengths"])
        mask = span_mask(key, lengths, frames, config.mask_prob, config.mask_length)
        logits, _ = task(batch["audio"], batch["lengths"], mask, neuron_mask)
        targets = batch["targets"]
        use = (mask & (targets >= 0)).astype(jnp.float32)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(targets, 0))
        count = jnp.maximum(use.sum(), 1.0)
        loss = (ce * use).sum() / count
        acc = ((logits.argmax(-1) == targets) * use).sum() / count
        return loss, {"masked_accuracy": acc, "masked_frames": use.sum()}

    def step_fn(params, rest, opt_state, batch, step, neuron_mask):
        key = jax.random.fold_in(jax.random.key(config.seed), step)
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, rest, batch, key, neuron_mask)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, {"loss": loss, "grad_norm": optax.global_norm(grads), **aux}

    r, s = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    batch_sharding = {"audio": s, "lengths": s, "targets": s}
    return jax.jit(
        step_fn,
        in_shardings=(r, r, r, batch_sharding, None, r if with_mask else None),
        out_shardings=(r, r, r),
        donate_argnums=(0, 2),
    )


class Trainer:
    """Owns the jitted train step, the optimizer state and the checkpoints of one run."""

    def __init__(
        self,
        encoder: nnx.Module,
        data: TrainData,
        config: TrainConfig,
        workdir: str,
        neuron_mask: np.ndarray | None = None,
        mesh: Mesh | None = None,
    ):
        self.data, self.config, self.workdir = data, config, os.path.abspath(workdir)
        if data.recipe is not None and not data.reinit_head:
            check_recipe_fits(encoder, data.recipe)
        self.fingerprint = run_fingerprint(encoder, data, config, neuron_mask)
        self.task = MaskedPredictionModel(encoder, data.num_clusters, config.seed, reinit_head=data.reinit_head)
        self.graphdef, self.params, self.rest = nnx.split(self.task, nnx.Param, ...)
        # The step donates its parameter buffers; own copies keep the caller's model alive after training.
        self.params = jax.tree.map(jnp.copy, self.params)
        self.tx = make_optimizer(config)
        self.opt_state = self.tx.init(self.params)
        self.step = 0
        self.neuron_mask = None if neuron_mask is None else jnp.asarray(neuron_mask, jnp.float32)
        devices = np.asarray(jax.devices())
        if mesh is None:
            n = math.gcd(len(devices), config.batch_size)
            mesh = Mesh(devices[:n], ("data",))
        self.mesh = mesh
        self.replicated = NamedSharding(mesh, P())
        self.sharded = NamedSharding(mesh, P("data"))
        os.makedirs(self.workdir, exist_ok=True)
        self.manager = ocp.CheckpointManager(
            os.path.join(self.workdir, "checkpoints"),
            options=ocp.CheckpointManagerOptions(max_to_keep=config.keep_checkpoints, create=True),
        )
        self.metrics_path = os.path.join(self.workdir, "metrics.jsonl")
        self._step_fn = self._build_step()

    def _build_step(self):
        return _jitted_step(self.graphdef, self.config, self.mesh, self.neuron_mask is not None)

    # -- checkpoints -------------------------------------------------------------------------------------
    def _checkpoint_tree(self) -> dict:
        return {"params": _pure(nnx.to_pure_dict(self.params)), "opt_state": _pure(self.opt_state),
                "step": np.asarray(self.step)}

    def save(self) -> None:
        """Checkpoint the current step: the training state and the run's fingerprint, committed together."""
        self.manager.save(self.step, args=ocp.args.Composite(**{
            STATE_ITEM: ocp.args.StandardSave(self._checkpoint_tree()),
            FINGERPRINT_ITEM: ocp.args.JsonSave(self.fingerprint),
        }))
        self.manager.wait_until_finished()

    def restore_latest(self, on_mismatch: str = "error") -> bool:
        """Resume from the latest checkpoint of the work directory if it belongs to this run.

        A checkpoint whose fingerprint differs (another model, train config, neuron mask or data) raises
        :class:`CheckpointMismatchError` (``on_mismatch="error"``), or is deleted and training starts from
        step 0 (``on_mismatch="fresh"``). Returns whether a checkpoint was restored.
        """
        if on_mismatch not in ON_MISMATCH:
            raise ValueError(f"on_mismatch must be one of {ON_MISMATCH}, got {on_mismatch!r}")
        latest = self.manager.latest_step()
        if latest is None:
            return False
        stored = self._stored_fingerprint(latest)
        if stored != self.fingerprint:
            differs = sorted(k for k in set(self.fingerprint) | set(stored or {})
                             if (stored or {}).get(k) != self.fingerprint.get(k))
            where = os.path.join(self.workdir, "checkpoints")
            if on_mismatch == "error":
                raise CheckpointMismatchError(
                    f"{where}: checkpoint of step {latest} was made by another run (differs in: "
                    f"{', '.join(differs) if stored else 'no fingerprint stored'}); use another work directory "
                    "or start fresh (on_mismatch='fresh', jaxneurons train --restart_on_mismatch)")
            logging.warning("%s: checkpoints of another run (%s) deleted; starting fresh", where, ", ".join(differs))
            for step in self.manager.all_steps():
                self.manager.delete(step)
            if os.path.exists(self.metrics_path):
                os.remove(self.metrics_path)
            return False
        target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype),
                              self._checkpoint_tree())
        restored = self.manager.restore(latest, args=ocp.args.Composite(**{
            STATE_ITEM: ocp.args.StandardRestore(target)}))[STATE_ITEM]
        nnx.replace_by_pure_dict(self.params, restored["params"])
        self.opt_state = jax.tree.map(jnp.asarray, restored["opt_state"])
        self.step = int(restored["step"])
        self._truncate_metrics(self.step)
        logging.info("resumed from %s at step %d", self.workdir, self.step)
        return True

    def _stored_fingerprint(self, step: int) -> dict[str, str] | None:
        try:
            return dict(self.manager.restore(step, args=ocp.args.Composite(**{
                FINGERPRINT_ITEM: ocp.args.JsonRestore()}))[FINGERPRINT_ITEM])
        except Exception:  # a checkpoint from before fingerprints (or another layout): treated as foreign
            return None

    def _truncate_metrics(self, step: int) -> None:
        """Drop metric lines past the restored step so a resumed log has each step once."""
        if not os.path.exists(self.metrics_path):
            return
        keep = []
        with open(self.metrics_path) as f:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:  # the half-written last line of a killed run
                    continue
                if record["step"] <= step:
                    keep.append(line if line.endswith("\n") else line + "\n")
        with open(self.metrics_path + ".tmp", "w") as f:
            f.writelines(keep)
        os.replace(self.metrics_path + ".tmp", self.metrics_path)

    # -- loop --------------------------------------------------------------------------------------------
    def train(self, until_step: int | None = None) -> list[dict]:
        """Run to ``until_step`` (default: ``config.steps``); returns the metrics of the steps run now."""
        until = self.config.steps if until_step is None else until_step
        history = []
        t_start, step_start = time.perf_counter(), self.step
        encoder = self.task.encoder
        bar = ProgressBar(until, initial=min(self.step, until), desc="train", unit="step")
        with bar, open(self.metrics_path, "a") as log:
            while self.step < until:
                batch = make_batch(self.data, encoder, self.config, self.step)
                batch = {k: jax.device_put(v, self.sharded) for k, v in batch.items()}
                self.params, self.opt_state, metrics = self._step_fn(
                    self.params, self.rest, self.opt_state, batch, self.step, self.neuron_mask
                )
                self.step += 1
                record = {"step": self.step, **{k: float(v) for k, v in metrics.items()},
                          "learning_rate": float(make_schedule(self.config)(self.step - 1))}
                history.append(record)
                log.write(json.dumps(record) + "\n")
                bar(self.step, loss=f"{record['loss']:.4f}", acc=f"{record['masked_accuracy']:.3f}")
                if self.step % self.config.log_every == 0 or self.step == until:
                    log.flush()
                    rate = (self.step - step_start) / (time.perf_counter() - t_start)
                    logging.info(
                        "step %d/%d loss %.4f masked-acc %.3f lr %.2e (%.2f steps/s, ETA %.0f s)",
                        self.step, until, record["loss"], record["masked_accuracy"], record["learning_rate"],
                        rate, (until - self.step) / max(rate, 1e-9),
                    )
                if self.step % self.config.checkpoint_every == 0 or self.step == self.config.steps:
                    log.flush()
                    self.save()
        return history

    def encoder(self) -> nnx.Module:
        """The trained encoder (with the current parameters)."""
        return nnx.merge(self.graphdef, self.params, self.rest).encoder


def run_fingerprint(encoder: nnx.Module, data: TrainData, config: TrainConfig,
                    neuron_mask: Any = None) -> dict[str, str]:
    """What a checkpoint must have been computed from to be resumed (one hash per component)."""
    mask = None if neuron_mask is None else [np.asarray(m, np.float32) for m in
                                             (neuron_mask if isinstance(neuron_mask, list | tuple) else [neuron_mask])]
    return {"model_config": json_fingerprint(encoder.config), "model_weights": weights_fingerprint(encoder),
            "train_config": json_fingerprint(config), "neuron_mask": arrays_fingerprint([mask]),
            "data": data.fingerprint()}


def pretrain(
    encoder: nnx.Module,
    data: TrainData,
    config: TrainConfig,
    workdir: str,
    neuron_mask: np.ndarray | None = None,
    resume: bool = True,
    on_mismatch: str = "error",
) -> tuple[nnx.Module, list[dict]]:
    """Train ``encoder`` (resuming from ``workdir`` if it holds a checkpoint of this run); returns it and the
    new metrics. ``on_mismatch``: see :meth:`Trainer.restore_latest`."""
    trainer = Trainer(encoder, data, config, workdir, neuron_mask=neuron_mask)
    if resume:
        trainer.restore_latest(on_mismatch)
    history = trainer.train()
    return trainer.encoder(), history
