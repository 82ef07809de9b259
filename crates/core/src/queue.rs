//! MoCo's negative queues, one PER DESCRIPTOR (docs/method.md): a key is enqueued only into the queue of
//! the descriptor whose augmentations produced it, so the negatives of a step always share its
//! invariance. The authors' release does the same for its three K = 2 descriptors; this works for any
//! family (docs/method.md, "Deviations").
//!
//! Each queue is a ring buffer `[size, D]` on the device with its own pointer on the host;
//! enqueueing writes rows in place (no host round trip).

use burn::prelude::*;

use crate::loss::normalize_rows;

/// One ring buffer of normalised keys per descriptor.
#[derive(Debug, Clone)]
pub struct DescriptorQueues {
    queues: Vec<Tensor<2>>,
    pointers: Vec<usize>,
    size: usize,
}

impl DescriptorQueues {
    /// `num_descriptors` queues of `size` random unit keys of width `dim` (MoCo's initialisation).
    pub fn new(num_descriptors: usize, size: usize, dim: usize, device: &Device) -> Self {
        let queues = (0..num_descriptors)
            .map(|_| normalize_rows(Tensor::random([size, dim], burn::tensor::Distribution::Normal(0.0, 1.0), device)))
            .collect();
        Self { queues, pointers: vec![0; num_descriptors], size }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// The negatives of descriptor `d`: `[size, D]`.
    pub fn queue(&self, d: usize) -> Tensor<2> {
        self.queues[d].clone()
    }

    /// Where the next key of descriptor `d` goes.
    pub fn pointer(&self, d: usize) -> usize {
        self.pointers[d]
    }

    /// Every queue's values (`[num_descriptors, size, D]` row-major) and pointers, for checkpoints.
    pub fn export(&self) -> (Vec<f32>, Vec<usize>) {
        let data = self.queues.iter().flat_map(|q| q.clone().into_data().try_to_vec::<f32>().expect("f32 queue")).collect();
        (data, self.pointers.clone())
    }

    /// Rebuilds queues from [`DescriptorQueues::export`]'s output.
    pub fn import(data: &[f32], pointers: Vec<usize>, size: usize, dim: usize, device: &Device) -> Result<Self, crate::CoreError> {
        let n = pointers.len();
        if n.checked_mul(size).and_then(|v| v.checked_mul(dim)) != Some(data.len()) || pointers.iter().any(|&p| p >= size.max(1)) {
            return Err(crate::CoreError::Config(format!(
                "queue state of {} values and pointers {pointers:?} does not fit {n} queues of {size} x {dim}",
                data.len()
            )));
        }
        let queues = data
            .chunks_exact(size * dim)
            .map(|q| Tensor::from_data(burn::tensor::TensorData::new(q.to_vec(), [size, dim]), device))
            .collect();
        Ok(Self { queues, pointers, size })
    }

    /// Writes `keys` (`[B, D]`, normalised here, detached) into queue `d` at its pointer, wrapping
    /// around the end, and advances the pointer. Batches larger than the queue keep their last
    /// `size` keys.
    pub fn enqueue(&mut self, d: usize, keys: Tensor<2>) {
        let keys = normalize_rows(keys.detach());
        let [batch, dim] = keys.dims();
        let (keys, batch) = if batch > self.size {
            (keys.slice([batch - self.size..batch, 0..dim]), self.size)
        } else {
            (keys, batch)
        };
        let start = self.pointers[d];
        let first = batch.min(self.size - start);
        let queue = self.queues[d].clone().slice_assign([start..start + first, 0..dim], keys.clone().slice([0..first, 0..dim]));
        let queue = if first < batch {
            queue.slice_assign([0..batch - first, 0..dim], keys.slice([first..batch, 0..dim]))
        } else {
            queue
        };
        self.queues[d] = queue;
        self.pointers[d] = (start + batch) % self.size;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(t: Tensor<2>) -> Vec<Vec<f32>> {
        let [n, d] = t.dims();
        let v: Vec<f32> = t.into_data().try_to_vec().unwrap();
        (0..n).map(|i| v[i * d..(i + 1) * d].to_vec()).collect()
    }

    fn keys(values: &[f32], device: &Device) -> Tensor<2> {
        // Unit keys [v, 0] / |v| = [sign, 0]; use distinct directions instead: [cos, sin].
        let flat: Vec<f32> = values.iter().flat_map(|&a| [a.cos(), a.sin()]).collect();
        Tensor::from_data(burn::tensor::TensorData::new(flat, [values.len(), 2]), device)
    }

    #[test]
    fn keys_go_only_to_their_descriptors_queue_and_the_pointer_wraps() {
        let device = Device::flex();
        let mut q = DescriptorQueues::new(3, 4, 2, &device);
        let before: Vec<_> = (0..3).map(|d| rows(q.queue(d))).collect();
        q.enqueue(1, keys(&[0.1, 0.2, 0.3], &device));
        assert_eq!(q.pointer(1), 3);
        assert_eq!(q.pointer(0), 0);
        assert_eq!(rows(q.queue(0)), before[0]);
        assert_eq!(rows(q.queue(2)), before[2]);
        let q1 = rows(q.queue(1));
        assert!((q1[2][0] - 0.3f32.cos()).abs() < 1e-6 && q1[3] == before[1][3]);

        // Three more keys: one fills row 3, two wrap to rows 0 and 1.
        q.enqueue(1, keys(&[0.4, 0.5, 0.6], &device));
        assert_eq!(q.pointer(1), 2);
        let q1 = rows(q.queue(1));
        let angle = |r: &Vec<f32>| r[1].atan2(r[0]);
        let got: Vec<f32> = q1.iter().map(angle).collect();
        for (g, e) in got.iter().zip([0.5, 0.6, 0.3, 0.4]) {
            assert!((g - e).abs() < 1e-5, "{got:?}");
        }
    }

    #[test]
    fn export_import_round_trip() {
        let device = Device::flex();
        let mut q = DescriptorQueues::new(2, 3, 2, &device);
        q.enqueue(1, keys(&[0.7], &device));
        let (data, pointers) = q.export();
        let r = DescriptorQueues::import(&data, pointers.clone(), 3, 2, &device).unwrap();
        assert_eq!(r.export(), (data.clone(), pointers));
        assert!(DescriptorQueues::import(&data[1..], vec![0, 1], 3, 2, &device).is_err());
    }

    #[test]
    fn oversized_batches_keep_their_last_keys() {
        let device = Device::flex();
        let mut q = DescriptorQueues::new(1, 2, 2, &device);
        q.enqueue(0, keys(&[0.1, 0.2, 0.3], &device));
        assert_eq!(q.pointer(0), 0);
        let got: Vec<f32> = rows(q.queue(0)).iter().map(|r| r[1].atan2(r[0])).collect();
        assert!((got[0] - 0.2).abs() < 1e-5 && (got[1] - 0.3).abs() < 1e-5, "{got:?}");
    }
}
