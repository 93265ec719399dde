//! Summaries of measured durations.

use std::time::Duration;

/// Durations in milliseconds, sorted, for percentiles.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    ms: Vec<f64>,
    sorted: bool,
}

impl Samples {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            ms: Vec::with_capacity(n),
            sorted: true,
        }
    }

    pub fn push(&mut self, d: Duration) {
        self.ms.push(d.as_secs_f64() * 1000.0);
        self.sorted = false;
    }

    pub fn len(&self) -> usize {
        self.ms.len()
    }

    fn sort(&mut self) {
        if !self.sorted {
            self.ms.sort_by(f64::total_cmp);
            self.sorted = true;
        }
    }

    /// The nearest-rank percentile `p` (0 < p <= 1), in ms; `None` without samples.
    pub fn percentile(&mut self, p: f64) -> Option<f64> {
        self.sort();
        let n = self.ms.len();
        if n == 0 {
            return None;
        }
        let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
        self.ms.get(rank - 1).copied().map(round3)
    }

    pub fn median(&mut self) -> Option<f64> {
        self.percentile(0.5)
    }

    pub fn max(&mut self) -> Option<f64> {
        self.percentile(1.0)
    }

    pub fn mean(&self) -> Option<f64> {
        if self.ms.is_empty() {
            None
        } else {
            Some(round3(self.ms.iter().sum::<f64>() / self.ms.len() as f64))
        }
    }
}

/// Rounded to three decimals (microseconds, for milliseconds), for readable JSON.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut s = Samples::default();
        assert_eq!(s.median(), None);
        for ms in 1..=100 {
            s.push(Duration::from_millis(ms));
        }
        assert_eq!(s.median(), Some(50.0));
        assert_eq!(s.percentile(0.99), Some(99.0));
        assert_eq!(s.max(), Some(100.0));
        assert_eq!(s.mean(), Some(50.5));
    }
}
