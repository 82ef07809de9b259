//! BatchNorm over `[N, C, H, W]` activations, with the batch statistics computed without
//! transposing the activations.
//!
//! burn 0.22.1's `batch_norm_train` (its default, which the CPU backend `flex` uses) gathers each
//! channel's values with `swap_dims(0, 1)` + `reshape`, which copies the whole activation, twice in
//! the forward pass and twice more in the backward pass. Here the per-channel sums reduce the
//! contiguous spatial axis first (`[N, C, H*W] -> [N, C, 1]`) and then the batch axis, so no
//! activation-sized copy is made, and the normalisation is one multiply-add with per-channel scale
//! and shift. autodiff differentiates these operations; the result equals burn's `BatchNorm`
//! (same parameters, same running statistics and momentum, same names in checkpoints), which the
//! tests check, forward and backward.
//!
//! On burn's CPU backend a training pass goes further: the statistics and the normalisation are
//! one backend operation with its own backward step (`crate::kernels::batch_norm_train`), unless
//! `crate::kernels::set_cpu_kernels` chose burn's operations.

use std::cell::RefCell;
use std::sync::Arc;

use burn::module::{Flag, Module, Param, RunningState};
use burn::prelude::*;

// ---------------------------------------------------------------------------------------------
// Statistics per descriptor (docs/method.md, "BatchNorm and the descriptor")
// ---------------------------------------------------------------------------------------------

/// One BatchNorm layer's per-channel statistics: mean and biased variance.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChannelStatistics {
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
}

/// What one forward pass recorded at every BatchNorm layer, in call order: the statistics of the
/// batch it saw and the running statistics the layer holds.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerRecord {
    pub batch: ChannelStatistics,
    pub running: ChannelStatistics,
    /// Values per channel the batch statistics were taken over (`N * H * W`).
    pub count: usize,
}

/// The statistics of every BatchNorm layer of an encoder, in the order its forward pass calls them.
pub type EncoderStatistics = Vec<ChannelStatistics>;

enum Mode {
    /// Running statistics (eval) or batch statistics (training), as the layer says.
    Layer,
    /// Eval-mode layers normalise with the batch's statistics and record them.
    Record(Vec<LayerRecord>),
    /// Eval-mode layers normalise with these statistics, the `next`-th for the next layer called.
    Replay { statistics: Arc<EncoderStatistics>, next: usize },
    /// Eval-mode layers normalise with the batch's statistics and keep them in the graph, so that
    /// a gradient sees them move with what produced the batch (the descriptor of a frozen encoder).
    Batch,
}

thread_local! {
    static MODE: RefCell<Mode> = const { RefCell::new(Mode::Layer) };
}

/// Restores the previous mode when dropped (also on panic).
struct ModeGuard(Option<Mode>);

impl Drop for ModeGuard {
    fn drop(&mut self) {
        if let Some(previous) = self.0.take() {
            MODE.with(|m| *m.borrow_mut() = previous);
        }
    }
}

fn enter(mode: Mode) -> ModeGuard {
    ModeGuard(Some(MODE.with(|m| std::mem::replace(&mut *m.borrow_mut(), mode))))
}

/// Runs `f` (forward passes on this thread) with every eval-mode BatchNorm normalising by the
/// statistics of the batch it sees, as in training, and returns what each layer call saw.
pub fn record_statistics<R>(f: impl FnOnce() -> R) -> (R, Vec<LayerRecord>) {
    let guard = enter(Mode::Record(Vec::new()));
    let out = f();
    let records = MODE.with(|m| match std::mem::replace(&mut *m.borrow_mut(), Mode::Layer) {
        Mode::Record(r) => r,
        _ => unreachable!("the mode is restored only by its guard"),
    });
    drop(guard);
    (out, records)
}

/// Runs `f` with every eval-mode BatchNorm normalising by the statistics of the batch it sees,
/// computed in the autodiff graph (not detached, unlike [`record_statistics`]): the derivative of
/// the result includes how those statistics change with the layer's input. Running statistics
/// are neither read nor updated.
pub fn batch_statistics_in_graph<R>(f: impl FnOnce() -> R) -> R {
    let _guard = enter(Mode::Batch);
    f()
}

/// Runs `f` with every eval-mode BatchNorm normalising by `statistics` (one entry per layer call
/// of a forward pass, in call order; each further pass starts over) instead of its running
/// statistics.
pub fn with_statistics<R>(statistics: Arc<EncoderStatistics>, f: impl FnOnce() -> R) -> R {
    let _guard = enter(Mode::Replay { statistics, next: 0 });
    f()
}

/// The statistics of all the images of several recorded passes (the same layers each time), each
/// layer pooled over the passes by their counts: exact for the union of the batches.
pub fn pool_records(passes: &[Vec<LayerRecord>]) -> Result<EncoderStatistics, crate::CoreError> {
    let Some(first) = passes.first() else { return Ok(Vec::new()) };
    if passes.iter().any(|p| p.len() != first.len()) {
        return Err(crate::CoreError::Numeric("the recorded passes called different numbers of BatchNorm layers".into()));
    }
    Ok((0..first.len())
        .map(|l| {
            let c = first[l].batch.mean.len();
            let total: f64 = passes.iter().map(|p| p[l].count as f64).sum::<f64>().max(1.0);
            let mut mean = vec![0f64; c];
            let mut square = vec![0f64; c];
            for p in passes {
                let (r, w) = (&p[l], p[l].count as f64 / total);
                for ch in 0..c {
                    let (m, v) = (r.batch.mean[ch] as f64, r.batch.var[ch] as f64);
                    mean[ch] += w * m;
                    square[ch] += w * (v + m * m);
                }
            }
            ChannelStatistics {
                mean: mean.iter().map(|&m| m as f32).collect(),
                var: square.iter().zip(&mean).map(|(&q, &m)| (q - m * m).max(0.0) as f32).collect(),
            }
        })
        .collect())
}

fn host(t: Tensor<1>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 statistics")
}

/// Configuration of a [`BatchNorm2d`] (burn's defaults: momentum 0.1, epsilon 1e-5).
#[derive(Config, Debug)]
pub struct BatchNorm2dConfig {
    pub num_features: usize,
    #[config(default = 1e-5)]
    pub epsilon: f64,
    #[config(default = 0.1)]
    pub momentum: f64,
}

impl BatchNorm2dConfig {
    pub fn init(&self, device: &Device) -> BatchNorm2d {
        let c = self.num_features;
        BatchNorm2d {
            gamma: Param::from_tensor(Tensor::ones([c], device)),
            beta: Param::from_tensor(Tensor::zeros([c], device)),
            training: Param::from_bool(true),
            running_mean: RunningState::new(Tensor::zeros([c], device)),
            running_var: RunningState::new(Tensor::ones([c], device)),
            momentum: self.momentum,
            epsilon: self.epsilon,
        }
    }
}

/// BatchNorm for `[N, C, H, W]`: batch statistics on an autodiff device unless the layer is frozen
/// (`Module::freeze` clears `training`, as for burn's `BatchNorm`), running statistics otherwise.
#[derive(Module, Debug)]
pub struct BatchNorm2d {
    pub gamma: Param<Tensor<1>>,
    pub beta: Param<Tensor<1>>,
    /// Whether the layer trains (cleared by `Module::freeze`).
    pub training: Param<Flag>,
    pub running_mean: RunningState<Tensor<1>>,
    pub running_var: RunningState<Tensor<1>>,
    pub momentum: f64,
    pub epsilon: f64,
}

/// Per-channel sums of `x` (`[N, C, H, W]`) as `[C]`.
fn channel_sums(x: Tensor<4>) -> Tensor<1> {
    let [n, c, h, w] = x.dims();
    x.reshape([n, c, h * w]).sum_dim(2).sum_dim(0).reshape([c])
}

impl BatchNorm2d {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_with(x, false)
    }

    /// `relu(self.forward(x))`, in one operation where [`crate::kernels`] run.
    pub fn forward_relu(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_with(x, true)
    }

    fn forward_with(&self, x: Tensor<4>, relu: bool) -> Tensor<4> {
        let device = x.device();
        let training = device.is_autodiff() && self.training.is_enabled();
        let [n, c, h, w] = x.dims();
        let in_graph = !training && MODE.with(|m| matches!(&*m.borrow(), Mode::Batch));
        if in_graph && x.dtype() == burn::tensor::DType::F32 && crate::kernels::own_kernels_on(&device) {
            // The training kernel, whose backward step differentiates the statistics too.
            return crate::kernels::batch_norm_train(x, self.gamma.val(), self.beta.val(), self.epsilon, relu).0;
        }
        if training && x.dtype() == burn::tensor::DType::F32 && crate::kernels::own_kernels_on(&device) {
            let (y, mean, var) = crate::kernels::batch_norm_train(x, self.gamma.val(), self.beta.val(), self.epsilon, relu);
            self.update_running(mean, var, &device);
            return y;
        }
        let batch_statistics = |x: &Tensor<4>| {
            let count = (n * h * w) as f64;
            let mean = channel_sums(x.clone()).div_scalar(count);
            let centred = x.clone() - mean.clone().reshape([1, c, 1, 1]);
            let var = channel_sums(centred.clone() * centred).div_scalar(count);
            (mean, var)
        };
        let (mean, var) = if training {
            let (mean, var) = batch_statistics(&x);
            self.update_running(mean.clone(), var.clone(), &device);
            (mean, var)
        } else {
            let running = || (self.running_mean.value().to_device(&device), self.running_var.value().to_device(&device));
            MODE.with(|m| match &mut *m.borrow_mut() {
                Mode::Layer => running(),
                Mode::Batch => batch_statistics(&x),
                Mode::Record(records) => {
                    let (mean, var) = batch_statistics(&x);
                    let (running_mean, running_var) = running();
                    records.push(LayerRecord {
                        batch: ChannelStatistics { mean: host(mean.clone()), var: host(var.clone()) },
                        running: ChannelStatistics { mean: host(running_mean), var: host(running_var) },
                        count: n * h * w,
                    });
                    (mean.detach(), var.detach())
                }
                Mode::Replay { statistics, next } => {
                    // One entry per layer call of a forward pass; the next pass starts over.
                    let s = statistics.get(*next % statistics.len().max(1)).filter(|s| s.mean.len() == c).unwrap_or_else(|| {
                        panic!("replayed BatchNorm statistics do not fit layer call {next} ({c} channels): they were recorded on another encoder")
                    });
                    *next += 1;
                    (Tensor::<1>::from_floats(s.mean.as_slice(), &device), Tensor::<1>::from_floats(s.var.as_slice(), &device))
                }
            })
        };
        let scale = self.gamma.val() * var.add_scalar(self.epsilon).sqrt().recip();
        let shift = self.beta.val() - mean * scale.clone();
        // One fused operation on the CPU; in WebAssembly burn's SIMD elementwise operations were
        // measured faster for the page's dial (its forward pass), so the page keeps them.
        if cfg!(not(target_arch = "wasm32")) && x.dtype() == burn::tensor::DType::F32 && crate::kernels::own_kernels_on(&device) {
            return crate::kernels::channel_affine(x, scale, shift, relu);
        }
        let y = x * scale.reshape([1, c, 1, 1]) + shift.reshape([1, c, 1, 1]);
        if relu { burn::tensor::activation::relu(y) } else { y }
    }

    /// Moves the running statistics toward a batch's `mean` and biased `var` (as burn's
    /// BatchNorm, which keeps the biased variance in its running estimate too).
    fn update_running(&self, mean: Tensor<1>, var: Tensor<1>, device: &Device) {
        let m = self.momentum;
        let running_mean = self.running_mean.value_sync().to_device(device);
        let running_var = self.running_var.value_sync().to_device(device);
        self.running_mean.update(running_mean.mul_scalar(1.0 - m).add(mean.detach().mul_scalar(m)).detach());
        self.running_var.update(running_var.mul_scalar(1.0 - m).add(var.detach().mul_scalar(m)).detach());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::BatchNormConfig;
    use burn::tensor::{Distribution, Tolerance};

    #[test]
    fn equals_burns_batch_norm_forward_backward_and_running_statistics() {
        let _serial = crate::serial_draws();
        let device = Device::flex().autodiff();
        device.seed(5);
        let ours = BatchNorm2dConfig::new(3).init(&device);
        let mut theirs = BatchNormConfig::new(3).init(&device);
        // Non-trivial parameters, the same on both.
        let gamma = Tensor::<1>::from_floats([0.5, 2.0, -1.0], &device);
        let beta = Tensor::<1>::from_floats([0.1, -0.3, 0.7], &device);
        let ours = BatchNorm2d { gamma: Param::from_tensor(gamma.clone()), beta: Param::from_tensor(beta.clone()), ..ours };
        theirs.gamma = Param::from_tensor(gamma);
        theirs.beta = Param::from_tensor(beta);
        let x = Tensor::<4>::random([4, 3, 5, 6], Distribution::Normal(1.5, 2.0), &device).require_grad();
        let weights = Tensor::<4>::random([4, 3, 5, 6], Distribution::Normal(0.0, 1.0), &device);
        let (y1, y2) = (ours.forward(x.clone()), theirs.forward(x.clone()));
        y1.to_data().assert_approx_eq::<f32>(&y2.to_data(), Tolerance::absolute(1e-5));
        let g1 = (y1 * weights.clone()).sum().backward();
        let g2 = (y2 * weights).sum().backward();
        let close = |a: Tensor<1>, b: Tensor<1>| a.into_data().assert_approx_eq::<f32>(&b.into_data(), Tolerance::absolute(1e-4));
        x.grad(&g1).unwrap().into_data().assert_approx_eq::<f32>(&x.grad(&g2).unwrap().into_data(), Tolerance::absolute(1e-5));
        close(ours.gamma.val().grad(&g1).unwrap(), theirs.gamma.val().grad(&g2).unwrap());
        close(ours.beta.val().grad(&g1).unwrap(), theirs.beta.val().grad(&g2).unwrap());
        close(ours.running_mean.value_sync().inner(), theirs.running_mean.value_sync().inner());
        close(ours.running_var.value_sync().inner(), theirs.running_var.value_sync().inner());
        // With the ReLU fused in: relu(burn's BatchNorm), forward and backward.
        let (y1, y2) = (ours.forward_relu(x.clone()), burn::tensor::activation::relu(theirs.forward(x.clone())));
        y1.to_data().assert_approx_eq::<f32>(&y2.to_data(), Tolerance::absolute(1e-5));
        let w2 = Tensor::<4>::random([4, 3, 5, 6], Distribution::Normal(0.0, 1.0), &device);
        let (g1, g2) = ((y1 * w2.clone()).sum().backward(), (y2 * w2).sum().backward());
        x.grad(&g1).unwrap().into_data().assert_approx_eq::<f32>(&x.grad(&g2).unwrap().into_data(), Tolerance::absolute(1e-5));
        close(ours.gamma.val().grad(&g1).unwrap(), theirs.gamma.val().grad(&g2).unwrap());
        close(ours.beta.val().grad(&g1).unwrap(), theirs.beta.val().grad(&g2).unwrap());
        // Eval mode (no autodiff): running statistics, as burn's.
        let (a, b) = (ours.valid(), theirs.valid());
        let x = x.inner();
        a.forward(x.clone()).into_data().assert_approx_eq::<f32>(&b.forward(x).into_data(), Tolerance::absolute(1e-5));
    }

    #[test]
    fn a_layer_without_gradients_still_normalises_with_batch_statistics() {
        let _serial = crate::serial_draws();
        // MoCo's key model: no gradients, but batch statistics (as burn's BatchNorm).
        let device = Device::flex().autodiff();
        let bn = BatchNorm2dConfig::new(2).init(&device).no_grad();
        let x = Tensor::<4>::random([3, 2, 4, 4], Distribution::Normal(3.0, 1.0), &device);
        let mean = bn.forward(x).mean().into_scalar::<f32>();
        assert!(mean.abs() < 1e-4, "batch statistics centre the output (mean {mean})");
    }

    #[test]
    fn recorded_statistics_pool_exactly_and_replay_normalises_with_them() {
        let _serial = crate::serial_draws();
        let device = Device::flex();
        device.seed(9);
        let bn = BatchNorm2dConfig::new(3).init(&device);
        let bn = BatchNorm2d { running_mean: RunningState::new(Tensor::from_floats([5.0, 5.0, 5.0], &device)), ..bn };
        let x = Tensor::<4>::random([6, 3, 4, 5], Distribution::Normal(2.0, 3.0), &device);
        // Eval mode normalises with the running statistics; recording uses the batch's.
        let (y, records) = record_statistics(|| bn.forward(x.clone()));
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].count, 6 * 4 * 5);
        assert_eq!(records[0].running.mean, vec![5.0; 3]);
        let mean = y.clone().mean().into_scalar::<f32>();
        assert!(mean.abs() < 1e-4, "batch statistics centre the output (mean {mean})");
        // Two halves pooled equal the whole batch.
        let (_, a) = record_statistics(|| bn.forward(x.clone().slice(0..2)));
        let (_, b) = record_statistics(|| bn.forward(x.clone().slice(2..6)));
        let pooled = pool_records(&[a, b]).unwrap();
        for (p, w) in pooled[0].mean.iter().zip(&records[0].batch.mean).chain(pooled[0].var.iter().zip(&records[0].batch.var)) {
            assert!((p - w).abs() < 1e-4 * w.abs().max(1.0), "{p} vs {w}");
        }
        // Replayed, the recorded statistics give the recorded output, pass after pass; outside
        // the replay the running statistics are back.
        let stats = Arc::new(vec![records[0].batch.clone()]);
        let (y1, y2) = with_statistics(stats, || (bn.forward(x.clone()), bn.forward(x.clone())));
        y1.to_data().assert_approx_eq::<f32>(&y.to_data(), Tolerance::absolute(1e-4));
        y2.to_data().assert_approx_eq::<f32>(&y.to_data(), Tolerance::absolute(1e-4));
        let after = bn.forward(x.clone()).mean().into_scalar::<f32>();
        assert!(after < -0.5, "running mean 5 shifts the output down (mean {after})");
    }

    #[test]
    fn frozen_layers_use_running_statistics() {
        let _serial = crate::serial_draws();
        let device = Device::flex().autodiff();
        let bn = BatchNorm2dConfig::new(2).init(&device).freeze();
        let x = Tensor::<4>::random([3, 2, 4, 4], Distribution::Normal(3.0, 1.0), &device);
        // Running mean 0 and variance 1: the output is the input (up to epsilon).
        bn.forward(x.clone()).into_data().assert_approx_eq::<f32>(&x.into_data(), Tolerance::absolute(1e-4));
        bn.running_mean.value().into_data().assert_approx_eq::<f32>(&TensorData::from([0.0f32, 0.0]), Tolerance::absolute(0.0));
    }
}
