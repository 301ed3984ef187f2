//! The history of past model outputs (or increments) that linear multistep samplers combine.
use std::collections::VecDeque;
use tch::Tensor;

/// Adams–Bashforth weights for equal steps, newest first (PNDM eq. 12 for order 4; diffusers
/// `PNDMScheduler.step_plms` for the lower orders it warms up with).
pub const ADAMS_BASHFORTH: [&[f64]; 4] = [
    &[1.0],
    &[3.0 / 2.0, -1.0 / 2.0],
    &[23.0 / 12.0, -16.0 / 12.0, 5.0 / 12.0],
    &[55.0 / 24.0, -59.0 / 24.0, 37.0 / 24.0, -9.0 / 24.0],
];

/// The last `capacity` entries, newest last.
pub struct History {
    capacity: usize,
    items: VecDeque<Tensor>,
}

impl History {
    pub fn new(capacity: usize) -> Self {
        History { capacity, items: VecDeque::with_capacity(capacity) }
    }
    pub fn push(&mut self, t: Tensor) {
        if self.items.len() == self.capacity {
            self.items.pop_front();
        }
        self.items.push_back(t);
    }
    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    /// Σ_j w_j · item_{n−j} with the Adams–Bashforth weights of `order` (1..=4, at most len()).
    pub fn adams_bashforth(&self, order: usize) -> Tensor {
        assert!((1..=4).contains(&order), "AB order {order}");
        self.weighted(ADAMS_BASHFORTH[order - 1])
    }
    /// Σ_j w_j · item_{n−j}, weights newest first (at most len() of them).
    pub fn weighted(&self, w: &[f64]) -> Tensor {
        assert!(!w.is_empty() && w.len() <= self.items.len(), "{} weights for {} entries", w.len(), self.items.len());
        let mut acc = &self.items[self.items.len() - 1] * w[0];
        for (j, &wj) in w.iter().enumerate().skip(1) {
            acc += &self.items[self.items.len() - 1 - j] * wj;
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn weights_sum_to_one_and_integrate_polynomials_exactly() {
        for (k, w) in ADAMS_BASHFORTH.iter().enumerate() {
            assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-15);
            // AB-k integrates f(s) = s^p (p < k) over [0, 1] from samples at s = 0, −1, −2, ...
            for p in 0..=k {
                let approx: f64 = w.iter().enumerate().map(|(j, wj)| wj * (-(j as f64)).powi(p as i32)).sum();
                assert!((approx - 1.0 / (p as f64 + 1.0)).abs() < 1e-13, "order {} p {p}", k + 1);
            }
        }
    }

    #[test]
    fn history_keeps_newest_entries() {
        let mut h = History::new(4);
        for i in 0..6 {
            h.push(Tensor::from(i as f64).to_kind(Kind::Double));
        }
        assert_eq!(h.len(), 4);
        // newest 5, then 4, 3, 2
        let v = h.adams_bashforth(4).double_value(&[]);
        assert!((v - (55.0 * 5.0 - 59.0 * 4.0 + 37.0 * 3.0 - 9.0 * 2.0) / 24.0).abs() < 1e-12);
    }
}
