//! Data-parallel pretraining on several devices, with burn's own multi-device machinery: the
//! pattern of burn-train's `MultiDevice` strategy (`OptimMainDevice`).
//!
//! Every batch is split into `shards` equal parts (a config setting, so that a run means the same
//! thing on any number of devices). Shard `k` runs on device `k % devices`, in that device's worker
//! thread: the model is forked onto the device (`Module::fork`), the shard's loss is scaled by
//! `1 / shards`, and its gradients (`GradientsParams`) are moved to the main device
//! (`GradientsParams::to_device`) and summed there (`GradientsAccumulator`). The sum is the mean
//! gradient over shards; the optimiser steps once, on the main device, which holds the only copy
//! of the parameters and of the optimiser state. Replicas therefore never drift apart: each step
//! starts from a fresh fork of the same parameters.
//!
//! - **Descriptor**: drawn from `(seed, step)` before the batch is split, so every shard of a step
//!   trains the same descriptor, on any number of devices and processes.
//! - **Views**: made for the whole batch with the step's generator, then split: the same pixels
//!   reach the same shard whatever the device count.
//! - **BatchNorm**: batch statistics per shard (the authors' release uses SyncBatchNorm in
//!   distributed runs; burn has no collective operation for it on these backends). burn keeps a
//!   running-statistics value per worker thread and averages them when they are read
//!   (`RunningState`), which is what checkpoints store.
//! - **Negatives**: SimCLR contrasts within a shard. MoCo-v2 reads the descriptor's queue as it was
//!   before the step on every shard, and the keys of all shards are then enqueued together, in
//!   shard order (MoCo's `concat_all_gather`): the queue holds the same keys as with one device.
//!
//! burn 0.22.1's true collectives (`burn::tensor::distributed::all_reduce`, the gradient-sync
//! server of `DistributedDataParallel`) exist only for its CUDA and remote backends: flex says
//! "Flex does not support collective operations" (burn-flex 0.22.1 `src/ops/transaction.rs`,
//! lines 10-11) and the dispatch layer compiles its collective arms for Cuda and Remote only
//! (burn-dispatch 0.22.1 `src/ops/distributed.rs`, lines 218-220). The gradient transfer and
//! accumulation used here work on every backend.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;

use crate::CoreError;
use crate::method::{ContrastiveModel, Method};

/// The loss of one shard. `scale` multiplies it (1 / shards) so that summed gradients are the mean.
#[derive(Clone)]
pub struct Objective {
    pub method: Method,
    pub temperature: f32,
    pub scale: f32,
}

impl Objective {
    /// The loss of `views` (`[2b, C, H, W]`: first views, then second views) and, for MoCo-v2, the
    /// keys to enqueue.
    pub fn loss(
        &self,
        model: &ContrastiveModel,
        key: Option<&ContrastiveModel>,
        views: Tensor<4>,
        i: Tensor<1>,
        index: usize,
        queue: Option<Tensor<2>>,
    ) -> (Tensor<1>, Option<Tensor<2>>) {
        let (loss, keys) = self.method.loss(model, key, views, i, index, queue, self.temperature);
        if self.scale == 1.0 { (loss, keys) } else { (loss.mul_scalar(self.scale), keys) }
    }
}

/// What a device computes in one step: its shards, with the model as it is before the step.
#[derive(Clone)]
pub struct Job {
    pub model: ContrastiveModel,
    pub key: Option<ContrastiveModel>,
    /// `(shard number, views of the shard)`, on the main device.
    pub shards: Vec<(usize, Tensor<4>)>,
    pub i: Tensor<1>,
    pub index: usize,
    pub queue: Option<Tensor<2>>,
    pub objective: Objective,
}

/// One shard's results, on the main device.
pub struct ShardOutput {
    pub shard: usize,
    pub loss: Tensor<1>,
    pub grads: GradientsParams,
    pub keys: Option<Tensor<2>>,
}

impl Job {
    /// Forks the model onto `device`, runs forward and backward for each shard there, and brings the
    /// gradients, losses and keys to `main`.
    pub fn run(self, device: &Device, main: &Device) -> Vec<ShardOutput> {
        let model = self.model.fork(device);
        let key = self.key.map(|k| k.fork(device));
        let i = self.i.to_device(device);
        let queue = self.queue.map(|q| q.to_device(device));
        self.shards
            .into_iter()
            .map(|(shard, views)| {
                let (loss, keys) = self.objective.loss(&model, key.as_ref(), views.to_device(device), i.clone(), self.index, queue.clone());
                let grads = GradientsParams::from_grads(loss.backward(), &model).to_device(main, &model);
                ShardOutput { shard, loss: loss.detach().to_device(main), grads, keys: keys.map(|k| k.detach().to_device(main)) }
            })
            .collect()
    }
}

/// The summed results of a step's shards, on the main device.
pub struct StepOutput {
    /// The mean loss over shards (each was scaled by 1 / shards).
    pub loss: Tensor<1>,
    /// The mean gradient over shards.
    pub grads: GradientsParams,
    /// MoCo-v2: every shard's keys, in shard order.
    pub keys: Option<Tensor<2>>,
}

/// Sums shard outputs in shard order (the order never depends on which device finished first).
pub fn combine(model: &ContrastiveModel, mut outputs: Vec<ShardOutput>) -> StepOutput {
    outputs.sort_by_key(|o| o.shard);
    let mut accumulator = GradientsAccumulator::new();
    let mut loss: Option<Tensor<1>> = None;
    let mut keys = Vec::new();
    for o in outputs {
        accumulator.accumulate(model, o.grads);
        loss = Some(match loss {
            Some(l) => l + o.loss,
            None => o.loss,
        });
        keys.extend(o.keys);
    }
    StepOutput {
        loss: loss.expect("a step has at least one shard"),
        grads: accumulator.grads(),
        keys: (!keys.is_empty()).then(|| Tensor::cat(keys, 0)),
    }
}

/// Splits the views of a batch of `batch` images (`[2 * batch, ...]`, first views then second
/// views) into `shards` shards of `batch / shards` images, each `[2b, ...]` with its first views
/// then its second views.
pub fn split_views(views: Tensor<4>, batch: usize, shards: usize) -> Vec<Tensor<4>> {
    if shards == 1 {
        return vec![views];
    }
    let b = batch / shards;
    (0..shards)
        .map(|k| Tensor::cat(vec![views.clone().narrow(0, k * b, b), views.clone().narrow(0, batch + k * b, b)], 0))
        .collect()
}

type Reply = Result<Vec<ShardOutput>, String>;

/// A worker thread bound to one device. Threads live as long as the run: burn keeps BatchNorm's
/// running statistics per thread, so the same thread must serve the same replica every step.
struct Worker {
    device: Device,
    jobs: Option<Sender<Job>>,
    replies: Receiver<Reply>,
    handle: Option<JoinHandle<()>>,
}

/// Worker threads, one per device; the first device is the main one (parameters, optimiser).
pub struct Replicas {
    workers: Vec<Worker>,
    descriptions: Vec<String>,
}

impl Replicas {
    /// Starts one worker per device (autodiff devices). `descriptions` name them in errors.
    pub fn new(devices: Vec<Device>, descriptions: Vec<String>) -> Self {
        let main = devices[0].clone();
        let workers = devices
            .into_iter()
            .enumerate()
            .map(|(n, device)| {
                let (job_tx, job_rx) = channel::<Job>();
                let (reply_tx, reply_rx) = channel::<Reply>();
                let (d, m) = (device.clone(), main.clone());
                let handle = std::thread::Builder::new()
                    .name(format!("replica-{n}"))
                    .spawn(move || {
                        for job in job_rx {
                            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run(&d, &m)))
                                .map_err(|p| panic_message(p.as_ref()));
                            if reply_tx.send(result).is_err() {
                                break;
                            }
                        }
                    })
                    .expect("spawning a replica thread");
                Worker { device, jobs: Some(job_tx), replies: reply_rx, handle: Some(handle) }
            })
            .collect();
        Self { workers, descriptions }
    }

    pub fn len(&self) -> usize {
        self.workers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Runs one step's shards: shard `k` on device `k % devices`, all devices at once.
    pub fn run(&self, job: Job) -> Result<StepOutput, CoreError> {
        let n = self.workers.len();
        let mut per_device: Vec<Vec<(usize, Tensor<4>)>> = vec![Vec::new(); n];
        for (k, views) in job.shards.iter().cloned() {
            per_device[k % n].push((k, views));
        }
        let busy: Vec<usize> = (0..n).filter(|&d| !per_device[d].is_empty()).collect();
        for &d in &busy {
            let shards = std::mem::take(&mut per_device[d]);
            let sender = self.workers[d].jobs.as_ref().expect("workers run until dropped");
            sender
                .send(Job { shards, ..job.clone() })
                .map_err(|_| self.failed(d, "it has stopped".into()))?;
        }
        let mut outputs = Vec::new();
        for &d in &busy {
            let reply = self.workers[d].replies.recv().map_err(|_| self.failed(d, "it has stopped".into()))?;
            outputs.extend(reply.map_err(|reason| self.failed(d, reason))?);
        }
        Ok(combine(&job.model, outputs))
    }

    fn failed(&self, d: usize, reason: String) -> CoreError {
        CoreError::Replica { device: format!("{} ({:?})", self.descriptions[d], self.workers[d].device), reason }
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for w in &mut self.workers {
            w.jobs = None; // closes the channel: the thread's loop ends
            if let Some(h) = w.handle.take() {
                let _ = h.join();
            }
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a replica panicked".to_string()
    }
}
