//! The kNN monitor of pretraining (k = 200, T = 0.1, cosine; see [`crate::knn`]): held-out training
//! images (never trained on) are classified against a bank of training images, once per monitored
//! descriptor, with the encoder frozen in eval mode through the same feature pass as downstream
//! fitting ([`Frozen`]) and, by default, the same BatchNorm statistics: recomputed at each
//! descriptor on the bank's images (`monitor.batch_norm`).

use std::path::PathBuf;

use ail_data::{ImageSet, epoch_order};

use super::config::PretrainConfig;
use crate::checkpoint::{CheckpointMeta, Normalization};
use crate::frozen::{BatchNormStatistics, Frozen};
use crate::knn::knn_accuracy;
use crate::method::ContrastiveModel;
use crate::{CoreError, Descriptor, Encoder};

/// The monitor's images.
pub struct Monitor {
    /// Training images whose features form the bank.
    pub bank: ImageSet,
    /// Held-out images, classified.
    pub queries: ImageSet,
    k: usize,
    temperature: f32,
    batch_norm: BatchNormStatistics,
}

/// How many images of `len` the monitor holds out (never trained on).
pub fn num_held_out(config: &PretrainConfig, len: usize) -> usize {
    config.monitor.queries.min(len / 5).max(1)
}

impl Monitor {
    /// Splits `data` into the held-out queries and the training images (returned with the
    /// permutation that orders them, so that audio clips can follow), and draws the bank from the
    /// training images. Everything derives from the seed.
    pub fn split(config: &PretrainConfig, data: &ImageSet) -> Result<(Self, ImageSet, Vec<usize>), CoreError> {
        let order = epoch_order(data.len(), config.seed ^ 0x6b6e_6e, 0, true);
        let num_queries = num_held_out(config, data.len());
        if data.len() <= num_queries + config.batch_size {
            return Err(CoreError::setting(
                "--data",
                format!(
                    "holds {} images, too few: {num_queries} are held out for the kNN monitor and a batch needs {}; lower --batch-size",
                    data.len(),
                    config.batch_size
                ),
            ));
        }
        let queries = data.subset(&order[..num_queries]);
        let train_order = order[num_queries..].to_vec();
        let train = data.subset(&train_order);
        let bank_order = epoch_order(train.len(), config.seed ^ 0x62_616e_6b, 0, true);
        let bank = train.subset(&bank_order[..config.monitor.bank.clamp(1, train.len())]);
        let (k, temperature, batch_norm) = (config.monitor.k, config.monitor.temperature, config.monitor.batch_norm);
        Ok((Self { bank, queries, k, temperature, batch_norm }, train, train_order))
    }

    /// `encoder` frozen as the monitor reads it: eval mode, and the BatchNorm statistics of
    /// `monitor.batch_norm` (per descriptor: computed on the bank's images, never the queries').
    pub fn frozen(&self, encoder: Encoder, meta: &CheckpointMeta) -> Result<Frozen, CoreError> {
        let mut frozen = Frozen::from_encoder(encoder, meta.clone(), PathBuf::from("(the model being trained)"))?;
        frozen.set_batch_norm_statistics(self.batch_norm, &self.bank.pixels, self.bank.len(), self.bank.shape());
        Ok(frozen)
    }

    /// kNN accuracy at each descriptor, with the encoder of `model` read as [`Monitor::frozen`] says.
    pub fn accuracies(&self, model: &ContrastiveModel, meta: &CheckpointMeta, descriptors: &[Descriptor]) -> Result<Vec<f64>, CoreError> {
        let frozen = self.frozen(model.encoder.clone(), meta)?;
        let device = frozen.device().clone().without_autodiff();
        // Uploaded once for every descriptor.
        let upload = |set: &ImageSet| Frozen::upload_u8(&set.pixels, set.len(), set.shape(), &device);
        let (queries, bank) = (upload(&self.queries), upload(&self.bank));
        descriptors
            .iter()
            .map(|d| {
                let features = |x01: &burn::prelude::Tensor<4>| crate::loss::normalize_rows(frozen.features(x01.clone(), d.values()));
                let sim = features(&queries).matmul(features(&bank).transpose());
                let sim: Vec<f32> = sim.into_data().try_to_vec().map_err(|e| CoreError::Numeric(format!("reading similarities: {e:?}")))?;
                Ok(knn_accuracy(&sim, &self.bank.labels, &self.queries.labels, self.bank.num_classes(), self.k, self.temperature))
            })
            .collect()
    }
}

/// The checkpoint description of the model `config` trains, at `step`.
pub fn checkpoint_meta(config: &PretrainConfig, normalization: &Normalization, step: u64) -> CheckpointMeta {
    let encoder = config.encoder_config();
    CheckpointMeta {
        family: encoder.kind.is_amortised().then_some(config.invariances.family()),
        encoder,
        step,
        normalization: Some(normalization.clone()),
        audio: (config.modality == super::config::Modality::Audio).then(|| config.audio.front_end()),
    }
}
