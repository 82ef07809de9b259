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
    let num_bank = bank_labels.len();
    let k = k.min(num_bank).max(1);
    let mut correct = 0usize;
    let mut order: Vec<usize> = Vec::with_capacity(num_bank);
    for (q, row) in similarity.chunks_exact(num_bank).enumerate() {
        order.clear();
        order.extend(0..num_bank);
        if k < num_bank {
            order.select_nth_unstable_by(k - 1, |&a, &b| row[b].total_cmp(&row[a]));
        }
        let mut votes = vec![0.0f64; num_classes];
        for &j in &order[..k] {
            votes[bank_labels[j] as usize] += ((row[j] / temperature) as f64).exp();
        }
        let predicted = (0..num_classes).max_by(|&a, &b| votes[a].total_cmp(&votes[b])).unwrap_or(0);
        if predicted == query_labels[q] as usize {
            correct += 1;
        }
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
}
