"""One training loop for every model: `python -m cerebral.train model=cerebral_lstm key=value ...`

Each run directory (`out_dir`, laid out in `cerebral.rundir`) holds the resolved config, a
checkpoint written atomically after every epoch, loss.txt in the published format, metrics.csv
and run.json. Re-running the same command resumes from the checkpoint and ends bit for bit where
an uninterrupted run would (on CPU); raising train.epochs extends a run. Epochs recorded without
their checkpoint (a fresh clone: checkpoints stay out of git) are trained again and checked
against the record (`rundir.RecordedEpochs`), which nothing overwrites unless the two part.
"""

import math
import os
import sys
import time

import hydra
import torch
from tqdm import tqdm

from cerebral import rundir
from cerebral.config import check_command_line, check_config
from cerebral.errors import USER_ERRORS, ConfigError, TrainingDiverged
from cerebral.models import parameter_count
from cerebral.precision import autocast, speed_warning
from cerebral.steps import (
    BatchSampler,
    device_name,
    keep_freed_memory,
    make_optimizer,
    make_scheduler,
    resolve_device,
    train_step,
    use_deterministic_kernels,
)
from cerebral.tasks import make_task

# Deterministic cuBLAS needs a fixed workspace, set before the first CUDA GEMM of the process.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

# Asked once, when this process loads the code: a sweep's later runs report the code they ran,
# not a commit made while they trained.
LOADED_COMMIT = rundir.git_commit()


def train(cfg):
    """Train (or resume, or extend) the run described by `cfg`; return the per-epoch losses.
    On the CPU it first calls `keep_freed_memory()`, which stays in force for the process."""
    check_config(cfg)
    rundir.resume_kernels(cfg)  # a run folder resumes on its own; a new run's auto is decided with its data
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        keep_freed_memory()
    use_deterministic_kernels()
    torch.manual_seed(cfg.seed)
    rundir.check_run_dir(cfg)  # a folder that refuses this run: before the data are read
    task = make_task(cfg)  # loads (and checks) the data, then builds the model from the seed, on its kernels
    if cfg.train.batch_size > len(task):
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} is larger than the "
                          f"{len(task)} training sequences")
    run_dir, lock = rundir.open_run(cfg)  # the lock is held until this function returns
    warning = speed_warning(cfg.train.precision, device)
    if warning:
        print(warning, flush=True)
    model, task = task.model.to(device), task.to(device)
    optimizer = make_optimizer(cfg.optim, model.parameters())
    scheduler = make_scheduler(cfg.optim, optimizer)
    sampler = BatchSampler(len(task), cfg.train, cfg.seed)
    columns = rundir.METRICS_COLUMNS + task.columns
    state = rundir.latest_checkpoint(run_dir)
    history = rundir.restore_checkpoint(run_dir, state, model, optimizer, scheduler, sampler) if state else []
    recorded = rundir.RecordedEpochs(run_dir, history, columns)  # e.g. a fresh clone's loss files
    replay_line = recorded.start_line(cfg.train.epochs)
    if replay_line:
        print(replay_line, flush=True)
    rundir.write_outputs(run_dir, history + recorded.ahead(history), columns)
    if len(history) >= cfg.train.epochs:
        print(f"{run_dir}: already trained for {len(history)} epochs (train.epochs={cfg.train.epochs})")
        return [row["train_loss"] for row in history]

    print(f"{cfg.task.name} {cfg.model.name}, seed {cfg.seed}: epochs {len(history)}-{cfg.train.epochs - 1} of "
          f"{sampler.steps} steps x {sampler.batch} sequences on {device_name(device)}, {cfg.train.precision}"
          f"{'' if cfg.train.elementwise == 'aten' else f', elementwise {cfg.train.elementwise}'} -> {run_dir}")
    rundir.record_session(run_dir, cfg, device, parameter_count(model), LOADED_COMMIT, task.data_sha256)
    items_per_step = sampler.batch * task.inputs.shape[1]  # time steps: characters, pixel rows or words
    bar = tqdm(total=cfg.train.epochs * sampler.steps, initial=len(history) * sampler.steps,
               desc=f"{cfg.model.name} seed {cfg.seed}", unit="step", dynamic_ncols=True)
    for epoch in range(len(history), cfg.train.epochs):
        model.train()
        start, total = time.perf_counter(), 0.0
        for step, batch in enumerate(sampler.epoch()):
            loss = train_step(model, optimizer, task.loss, batch.to(device), precision=cfg.train.precision).item()
            if not math.isfinite(loss):
                bar.close()
                kept = (f"{run_dir / rundir.CHECKPOINT} keeps the last good state (epoch {len(history) - 1})" if history
                        else "no epoch had finished, so there is no checkpoint")
                raise TrainingDiverged(f"the loss became {loss} at epoch {epoch}, step {step}; stopped. "
                                       f"{kept}. Try a smaller optim.lr.{recorded.stopped(epoch)}")
            total += loss
            bar.set_postfix(epoch=epoch, loss=f"{total / (step + 1):.4f}", refresh=False)
            bar.update()
        seconds = time.perf_counter() - start
        if scheduler is not None:
            scheduler.step()
        model.eval()
        with autocast(cfg.train.precision, device):
            metrics = task.evaluate(model)
        row = {"epoch": epoch, "train_loss": total / sampler.steps, "seconds": seconds,
               "chars_per_second": sampler.steps * items_per_step / seconds, **metrics}
        history.append({c: row.get(c) for c in columns})
        outcome = recorded.check(history)  # before saving: an epoch that repeats the record keeps its row
        if outcome:
            tqdm.write(outcome)
        rundir.save_checkpoint(run_dir, model, optimizer, scheduler, sampler, history, task.vocab)
        rundir.write_outputs(run_dir, history + recorded.ahead(history), columns)
    bar.close()
    last = history[-1]
    extra = ", ".join(f"{c} {last[c]:.4f}" for c in task.columns if last[c] is not None)
    print(f"{run_dir}: {len(history)} epochs, final loss {last['train_loss']:.4f}{', ' + extra if extra else ''}"
          f" -> {run_dir / 'metrics.csv'}")
    return [row["train_loss"] for row in history]


@hydra.main(config_path="../conf", config_name="config", version_base=None)
def main(cfg):
    try:
        train(cfg)
    except USER_ERRORS as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    try:
        check_command_line(sys.argv[1:])  # a bad override: our one line, not Hydra's dozen
    except ConfigError as e:
        sys.exit(f"error: {e}")
    main()
