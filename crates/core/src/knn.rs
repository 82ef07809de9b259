//! Weighted k-nearest-neighbour accuracy, the monitor of contrastive pretraining (Wu et al. 2018,
//! "Unsupervised Feature Learning via Non-Parametric Instance Discrimination", Section 3.4):
//! each query's `k` most similar bank features vote for their labels with weight `exp(sim / T)`.
//! The defaults of the paper and of MoCo's monitor are `k = 200`, `T = 0.1`, cosine similarity.

/// Accuracy of the weighted kNN vote.
///
/// - `similarity`: `[num_queries, num_bank]` row-major cosine similarities;
/// - `bank_labels`: `[num_bank]`, `query_labels`: `[num_queries]`, both `< num_classes`.
pub fn knn_accuracy(
    similarity: &[f32],
    bank_labels: &[u32],
    query_labels: &[u32],
    num_classes: usize,
    k: usize,
    temperature: f32,
) -> f64 {
    correct_votes(similarity, bank_labels, query_labels, num_classes, k, temperature) as f64 / query_labels.len().max(1) as f64
}

/// How many of `query_labels` the weighted vote over `similarity` (`[queries, bank]`) gets right.
fn correct_votes(similarity: &[f32], bank_labels: &[u32], query_labels: &[u32], num_classes: usize, k: usize, temperature: f32) -> usize {
    let num_bank = bank_labels.len();
    let k = k.min(num_bank).max(1);
    let mut correct = 0usize;
    let mut order: Vec<usize> = Vec::with_capacity(num_bank);
    let mut votes = vec![0.0f64; num_classes];
    for (q, row) in similarity.chunks_exact(num_bank).enumerate() {
        order.clear();
        order.extend(0..num_bank);
        if k < num_bank {
            order.select_nth_unstable_by(k - 1, |&a, &b| row[b].total_cmp(&row[a]));
        }
        votes.fill(0.0);
        for &j in &order[..k] {
            votes[bank_labels[j] as usize] += ((row[j] / temperature) as f64).exp();
        }
        let predicted = (0..num_classes).max_by(|&a, &b| votes[a].total_cmp(&votes[b])).unwrap_or(0);
        if predicted == query_labels[q] as usize {
            correct += 1;
        }
    }
    correct
}

/// Queries per block of [`knn_accuracy_of_features`]: its similarities take `BLOCK x bank` floats.
const BLOCK: usize = 256;

/// The weighted kNN vote from features (`queries` `[num_queries, d]`, `bank` `[num_bank, d]`,
/// row-major) with cosine similarity, for banks of any size: the similarities are computed one
/// block of queries at a time (a GEMM), so memory stays `256 x num_bank` floats however many
/// queries there are (10,000 queries against a 40,000-image bank would take 1.6 GB at once).
#[allow(clippy::too_many_arguments)]
pub fn knn_accuracy_of_features(
    queries: &[f32],
    bank: &[f32],
    d: usize,
    bank_labels: &[u32],
    query_labels: &[u32],
    num_classes: usize,
    k: usize,
    temperature: f32,
) -> f64 {
    assert!(d > 0, "knn: feature dimension 0");
    assert_eq!(queries.len(), query_labels.len() * d, "knn: queries are not [query_labels, d]");
    assert_eq!(bank.len(), bank_labels.len() * d, "knn: bank is not [bank_labels, d]");
    let normalise = |f: &[f32]| -> Vec<f32> {
        f.chunks_exact(d)
            .flat_map(|r| {
                let n = r.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                r.iter().map(move |v| v / n)
            })
            .collect()
    };
    let (q, b) = (normalise(queries), normalise(bank));
    let num_bank = bank_labels.len();
    if num_bank == 0 {
        return 0.0;
    }
    let mut sim = vec![0.0f32; BLOCK.min(query_labels.len()) * num_bank];
    let mut correct = 0;
    for (block, labels) in q.chunks(BLOCK * d).zip(query_labels.chunks(BLOCK)) {
        let m = labels.len();
        let sim = &mut sim[..m * num_bank];
        // SAFETY: `sim` holds `m x num_bank` floats, `block` `m x d` and `b` `num_bank x d`, each
        // row-major as the strides say (asserted above).
        unsafe {
            gemm::gemm(
                m,
                num_bank,
                d,
                sim.as_mut_ptr(),
                1,
                num_bank as isize,
                false,
                block.as_ptr(),
                1,
                d as isize,
                b.as_ptr(),
                d as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(0),
            );
        }
        correct += correct_votes(sim, bank_labels, labels, num_classes, k, temperature);
    }
    correct as f64 / query_labels.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_votes_by_hand() {
        // Bank: two of class 0 with similarities 0.5 and 0.4, one of class 1 with 0.9.
        // k = 3, T = 0.1: class 0 gets e^5 + e^4 = 203.0, class 1 gets e^9 = 8103: predicts 1.
        let sim = [0.5, 0.4, 0.9];
        assert_eq!(knn_accuracy(&sim, &[0, 0, 1], &[1], 2, 3, 0.1), 1.0);
        // T = 1: class 0 gets e^0.5 + e^0.4 = 3.14, class 1 e^0.9 = 2.46: predicts 0.
        assert_eq!(knn_accuracy(&sim, &[0, 0, 1], &[1], 2, 3, 1.0), 0.0);
        // k = 1: the nearest alone decides.
        assert_eq!(knn_accuracy(&sim, &[0, 0, 1], &[1], 2, 1, 1.0), 1.0);
    }

    #[test]
    fn accuracy_averages_queries() {
        // Two queries, each nearest to a bank item of its own class, except the second.
        let sim = [0.9, 0.1, 0.8, 0.2];
        assert_eq!(knn_accuracy(&sim, &[0, 1], &[0, 1], 2, 1, 0.1), 0.5);
    }

    /// The blocked GEMM path equals the vote over the whole similarity matrix, across several
    /// blocks (600 queries), with features of any length (they are normalised first).
    #[test]
    fn from_features_equals_the_vote_over_the_whole_matrix() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let (d, nq, nb, classes) = (5, 600, 97, 4);
        let bank_labels: Vec<u32> = (0..nb).map(|j| (j % classes) as u32).collect();
        // Features near a class centre, so the vote is right more often than chance but not always.
        let centre = |c: u32, rng: &mut rand_chacha::ChaCha8Rng| -> Vec<f32> {
            (0..d).map(|t| if t == c as usize { 2.0 } else { 0.0 } + rng.random_range(-1.5f32..1.5) * (1 + t) as f32).collect()
        };
        let bank: Vec<f32> = bank_labels.iter().flat_map(|&c| centre(c, &mut rng)).collect();
        let query_labels: Vec<u32> = (0..nq).map(|_| rng.random_range(0..classes as u32)).collect();
        let queries: Vec<f32> = query_labels.iter().flat_map(|&c| centre(c, &mut rng)).collect();
        let unit = |f: &[f32]| -> Vec<Vec<f32>> {
            f.chunks(d).map(|r| {
                let n = r.iter().map(|v| v * v).sum::<f32>().sqrt();
                r.iter().map(|v| v / n).collect()
            }).collect()
        };
        let (uq, ub) = (unit(&queries), unit(&bank));
        let sim: Vec<f32> = uq.iter().flat_map(|q| ub.iter().map(|b| q.iter().zip(b).map(|(x, y)| x * y).sum::<f32>()).collect::<Vec<_>>()).collect();
        for (k, t) in [(1, 0.1), (20, 0.1), (200, 1.0)] {
            let whole = knn_accuracy(&sim, &bank_labels, &query_labels, classes, k, t);
            let blocked = knn_accuracy_of_features(&queries, &bank, d, &bank_labels, &query_labels, classes, k, t);
            assert!(whole > 0.3 && whole < 1.0, "k {k}: a vote that is neither chance nor perfect ({whole})");
            assert!((whole - blocked).abs() <= 2.0 / nq as f64, "k {k}: blocked {blocked} against whole {whole}");
        }
    }
}
