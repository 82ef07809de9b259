//! Deterministic shuffled batches, assembled ahead of time on a prefetch thread.
//!
//! The order of epoch `e` is a Fisher-Yates permutation drawn from ChaCha8 seeded with `seed` on
//! stream `e`, so it depends on nothing but `(seed, e)`: a run resumed at step `s` sees exactly the
//! batches an uninterrupted run would have seen.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::{DataError, ImageSet, Result};

/// How batches are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoaderConfig {
    pub batch_size: usize,
    pub seed: u64,
    /// Shuffle every epoch (otherwise dataset order).
    pub shuffle: bool,
    /// Batches assembled ahead of the consumer.
    pub prefetch: usize,
    /// First step to produce (for resuming).
    pub start_step: u64,
}

impl LoaderConfig {
    pub fn new(batch_size: usize, seed: u64) -> Self {
        Self {
            batch_size,
            seed,
            shuffle: true,
            prefetch: 4,
            start_step: 0,
        }
    }
}

/// One batch of images, `[batch, C, H, W]` `u8`.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub step: u64,
    pub epoch: u64,
    /// Dataset indices of the images, in batch order.
    pub indices: Vec<usize>,
    pub pixels: Vec<u8>,
    pub labels: Vec<u32>,
    /// `[batch, channels, height, width]`.
    pub shape: [usize; 4],
}

/// The image order of one epoch.
pub fn epoch_order(len: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    if shuffle {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(epoch);
        order.shuffle(&mut rng);
    }
    order
}

/// An endless stream of full batches (the last partial batch of each epoch is dropped, as usual
/// for contrastive pretraining). Dropping the loader stops its thread.
pub struct BatchLoader {
    receiver: Option<Receiver<Batch>>,
    worker: Option<JoinHandle<()>>,
    steps_per_epoch: u64,
}

impl BatchLoader {
    pub fn new(data: Arc<ImageSet>, config: LoaderConfig) -> Result<Self> {
        if config.batch_size == 0 {
            return Err(DataError::InvalidOption("batch size must be at least 1".into()));
        }
        if data.len() < config.batch_size {
            return Err(DataError::InvalidOption(format!(
                "the dataset has {} images, fewer than one batch of {}: lower --batch-size",
                data.len(),
                config.batch_size
            )));
        }
        let steps_per_epoch = (data.len() / config.batch_size) as u64;
        let (sender, receiver) = sync_channel(config.prefetch.max(1));
        let worker = std::thread::Builder::new()
            .name("ail-prefetch".into())
            .spawn(move || produce(&data, config, steps_per_epoch, sender))
            .map_err(|e| DataError::InvalidOption(format!("cannot start the prefetch thread: {e}")))?;
        Ok(Self {
            receiver: Some(receiver),
            worker: Some(worker),
            steps_per_epoch,
        })
    }

    pub fn steps_per_epoch(&self) -> u64 {
        self.steps_per_epoch
    }
}

fn produce(data: &ImageSet, config: LoaderConfig, steps_per_epoch: u64, sender: SyncSender<Batch>) {
    let mut epoch = config.start_step / steps_per_epoch;
    let mut order = epoch_order(data.len(), config.seed, epoch, config.shuffle);
    let [c, h, w] = data.shape();
    for step in config.start_step.. {
        if step / steps_per_epoch != epoch {
            epoch = step / steps_per_epoch;
            order = epoch_order(data.len(), config.seed, epoch, config.shuffle);
        }
        let start = (step % steps_per_epoch) as usize * config.batch_size;
        let indices = order[start..start + config.batch_size].to_vec();
        let mut pixels = Vec::with_capacity(indices.len() * data.image_len());
        for &i in &indices {
            pixels.extend_from_slice(data.image(i));
        }
        let batch = Batch {
            step,
            epoch,
            labels: indices.iter().map(|&i| data.labels[i]).collect(),
            indices,
            pixels,
            shape: [config.batch_size, c, h, w],
        };
        if sender.send(batch).is_err() {
            return; // the loader was dropped
        }
    }
}

impl Iterator for BatchLoader {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        self.receiver.as_ref()?.recv().ok()
    }
}

impl Drop for BatchLoader {
    fn drop(&mut self) {
        self.receiver.take(); // unblocks the worker's send
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(n: usize) -> Arc<ImageSet> {
        Arc::new(
            ImageSet::new(
                (0..n as u8).collect(),
                (0..n as u32).map(|i| i % 2).collect(),
                vec!["even".into(), "odd".into()],
                [1, 1, 1],
            )
            .unwrap(),
        )
    }

    #[test]
    fn epochs_are_permutations_and_depend_only_on_seed_and_epoch() {
        let a = epoch_order(100, 7, 3, true);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(100, 7, 3, true));
        assert_ne!(a, epoch_order(100, 7, 4, true));
        assert_ne!(a, epoch_order(100, 8, 3, true));
        assert_eq!(epoch_order(5, 7, 3, false), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn batches_carry_their_pixels_and_labels() {
        let loader = BatchLoader::new(numbered(10), LoaderConfig::new(3, 1)).unwrap();
        assert_eq!(loader.steps_per_epoch(), 3);
        let batches: Vec<Batch> = loader.take(7).collect();
        for b in &batches {
            assert_eq!(b.shape, [3, 1, 1, 1]);
            let expected: Vec<u8> = b.indices.iter().map(|&i| i as u8).collect();
            assert_eq!(b.pixels, expected);
            assert!(b.indices.iter().zip(&b.labels).all(|(&i, &l)| l == i as u32 % 2));
        }
        // An epoch never repeats an image; the next epoch is a new order.
        let first: Vec<usize> = batches[..3].iter().flat_map(|b| b.indices.clone()).collect();
        let mut unique = first.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 9);
        assert_eq!(batches[3].epoch, 1);
        assert_eq!(batches[6].step, 6);
    }

    #[test]
    fn resuming_replays_the_same_batches() {
        let full: Vec<Batch> = BatchLoader::new(numbered(10), LoaderConfig::new(3, 5)).unwrap().take(8).collect();
        let resumed: Vec<Batch> = BatchLoader::new(
            numbered(10),
            LoaderConfig { start_step: 4, ..LoaderConfig::new(3, 5) },
        )
        .unwrap()
        .take(4)
        .collect();
        assert_eq!(&full[4..], &resumed[..]);
    }

    #[test]
    fn too_small_dataset_says_what_to_change() {
        let err = BatchLoader::new(numbered(2), LoaderConfig::new(3, 0)).err().unwrap().to_string();
        assert!(err.contains("fewer than one batch of 3") && err.contains("--batch-size"), "{err}");
        let err = BatchLoader::new(numbered(2), LoaderConfig::new(0, 0)).err().unwrap().to_string();
        assert!(err.contains("at least 1"), "{err}");
    }
}
