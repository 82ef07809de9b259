//! Data-parallel pretraining: replicas train exactly like one device that runs the same shards in
//! turn and draw the same descriptors, and the shard machinery computes the direct step.

use ail_core::checkpoint::Normalization;
use ail_core::method::{ContrastiveModel, Method};
use ail_core::pretrain::{PretrainConfig, Replicas, Stepper, optimizer};
use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Every trainable value of the model (BatchNorm running statistics excluded), in visiting order.
fn trainable(model: &ContrastiveModel) -> Vec<f32> {
    struct All(Vec<f32>);
    impl ModuleVisitor for All {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            let t = p.val();
            if t.is_require_grad() {
                self.0.extend(t.into_data().try_to_vec::<f32>().unwrap());
            }
        }
    }
    let mut all = All(Vec::new());
    model.visit(&mut all);
    all.0
}

/// `steps` steps of `method` on a fixed batch of `batch` random 8x8 images split into `shards`,
/// on `devices` CPU replicas (1: the shards in turn on this thread). Returns the trainable values
/// and the descriptor index of every step.
/// A tiny config: 8x8 images, a narrow encoder and heads.
fn tiny_config() -> PretrainConfig {
    let mut config = PretrainConfig { queue_size: 32, steps: 100, ..Default::default() };
    config.data.image_size = 8;
    config.encoder.width = 0.0625;
    config.encoder.hidden = 8;
    config.heads.hidden = 32;
    config.heads.output = 16;
    config.optimizer.warmup_steps = 0;
    config.optimizer.lr = 3e-3;
    config
}

fn train(method: Method, batch: usize, shards: usize, devices: usize, steps: u64) -> (Vec<f32>, Vec<usize>) {
    let config = PretrainConfig { method, batch_size: batch, shards, ..tiny_config() };
    config.validate().unwrap();
    let device = Device::flex().autodiff();
    device.seed(7);
    let invariances = &config.invariances;
    let encoder = config.encoder_config();
    let head = config.head_config(&encoder);
    let mut model = ContrastiveModel::new(&encoder, &head, invariances.trained().len(), false, &device).unwrap();
    if method == Method::Mocov3 {
        model = model.with_predictor(&head, &device);
    }
    let mut optim = optimizer(&config);
    let stats = Normalization { mean: vec![0.5; 3], std: vec![0.25; 3] };
    let mut stepper = Stepper::new(&config, &device, &stats, [3, 8, 8], &model);
    if devices > 1 {
        let replicas = Replicas::new(vec![device.clone(); devices], (0..devices).map(|k| format!("cpu replica {k}")).collect());
        stepper = stepper.with_replicas(replicas);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut drawn = Vec::new();
    for step in 0..steps {
        let pixels: Vec<u8> = (0..batch * 3 * 8 * 8).map(|_| rng.random()).collect();
        let (next, out) = stepper.step(model, &mut optim, &pixels, step).unwrap();
        assert!(out.loss.into_scalar::<f32>().is_finite());
        model = next;
        drawn.push(out.descriptor);
    }
    (trainable(&model), drawn)
}

fn max_abs_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn two_replicas_with_global_batch_2b_train_like_one_replica_with_two_shards_of_b() {
    let _serial = ail_core::serial_draws();
    for method in [Method::Simclr, Method::Mocov2, Method::Mocov3] {
        let (parallel, drawn_parallel) = train(method, 8, 2, 2, 4);
        let (sequential, drawn_sequential) = train(method, 8, 2, 1, 4);
        // The same descriptors, drawn from (seed, step) and not per replica.
        assert_eq!(drawn_parallel, drawn_sequential, "{method}");
        assert!(drawn_parallel.iter().any(|&d| d != drawn_parallel[0]), "{method}: the test should cover several descriptors");
        let difference = max_abs_difference(&parallel, &sequential);
        eprintln!("{method}: two replicas against two shards in turn: max difference {difference:e}");
        assert!(difference < 1e-5, "{method}: replicas and shards in turn differ by {difference}");
        // The comparison can fail: the same batch unsplit (one BatchNorm batch, all negatives)
        // trains differently.
        let (whole, _) = train(method, 8, 1, 1, 4);
        let apart = max_abs_difference(&whole, &sequential);
        eprintln!("{method}: the batch unsplit against split: max difference {apart:e}");
        assert!(apart > 1e-3, "{method}: unsplit and split batches should train differently (differ by {apart})");
    }
}

#[test]
fn shards_compute_the_direct_loss_gradients_and_step() {
    // The shard machinery (fork, scale, gradient transfer, accumulation) against the step written
    // out directly: one shard is the plain step; two shards average the two halves' losses.
    use ail_core::pretrain::parallel::{Job, Objective, combine, split_views};
    use burn::optim::GradientsParams;
    let _serial = ail_core::serial_draws();
    let config = PretrainConfig { queue_size: 4096, steps: 300, ..tiny_config() };
    let config = PretrainConfig { optimizer: PretrainConfig::default().optimizer, ..config };
    let device = Device::flex().autodiff();
    device.seed(11);
    let invariances = &config.invariances;
    let encoder = config.encoder_config();
    let head = config.head_config(&encoder);
    let model = ContrastiveModel::new(&encoder, &head, invariances.trained().len(), false, &device).unwrap();
    let x = Tensor::<4>::random([16, 3, 8, 8], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
    let i = Tensor::<1>::from_floats([1.0, 0.0], &device);
    let loss_of = |views: Tensor<4>| model.simclr_loss(views, i.clone(), 0, config.temperature).into_scalar::<f32>();
    for shards in [1, 2] {
        let job = Job {
            model: model.clone(),
            key: None,
            shards: split_views(x.clone(), 8, shards).into_iter().enumerate().collect(),
            i: i.clone(),
            index: 0,
            queue: None,
            objective: Objective { method: Method::Simclr, temperature: config.temperature, scale: 1.0 / shards as f32 },
        };
        let out = combine(&model, job.run(&device, &device));
        let expected = if shards == 1 {
            loss_of(x.clone())
        } else {
            // shard 0: images 0-3 (views 0-3 and 8-11); shard 1: images 4-7
            let half = |k: usize| Tensor::cat(vec![x.clone().narrow(0, 4 * k, 4), x.clone().narrow(0, 8 + 4 * k, 4)], 0);
            (loss_of(half(0)) + loss_of(half(1))) / 2.0
        };
        let got = out.loss.into_scalar::<f32>();
        assert!((got - expected).abs() < 1e-5, "{shards} shard(s): loss {got}, written out {expected}");
        if shards == 1 {
            let direct = GradientsParams::from_grads(model.simclr_loss(x.clone(), i.clone(), 0, config.temperature).backward(), &model);
            let (a, b) = (optimizer(&config).step(1e-2, model.clone(), direct), optimizer(&config).step(1e-2, model.clone(), out.grads));
            let difference = max_abs_difference(&trainable(&a), &trainable(&b));
            assert!(difference < 1e-6, "one shard's step differs from the direct step by {difference}");
            assert!(max_abs_difference(&trainable(&a), &trainable(&model)) > 1e-4, "the step should move the parameters");
        }
    }
}
