//! Latency histogram.

/// Log-linear latency histogram: 32 sub-buckets per power of two (≤ 3% error).
pub(crate) struct Histogram {
    pub(crate) buckets: Vec<u64>,
    pub(crate) count: u64,
    pub(crate) max: u64,
    pub(crate) sum: u128,
}

pub(crate) const SUB_BITS: u32 = 5;

impl Histogram {
    pub(crate) fn new() -> Self {
        Self {
            buckets: vec![0; 64 << SUB_BITS],
            count: 0,
            max: 0,
            sum: 0,
        }
    }

    pub(crate) fn index(v: u64) -> usize {
        if v < (1 << SUB_BITS) {
            return v as usize;
        }
        let top = 63 - v.leading_zeros();
        let shift = top - SUB_BITS;
        let sub = (v >> shift) & ((1 << SUB_BITS) - 1);
        (((shift + 1) << SUB_BITS) as u64 + sub) as usize
    }

    /// The middle of a bucket's value range.
    pub(crate) fn value(i: usize) -> u64 {
        let i = i as u64;
        if i < (1 << SUB_BITS) {
            return i;
        }
        let shift = (i >> SUB_BITS) - 1;
        let sub = i & ((1 << SUB_BITS) - 1);
        let low = ((1 << SUB_BITS) | sub) << shift;
        low + (1 << shift) / 2
    }

    pub(crate) fn record(&mut self, v: u64) {
        self.buckets[Self::index(v)] += 1;
        self.count += 1;
        self.max = self.max.max(v);
        self.sum += v as u128;
    }

    pub(crate) fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    pub(crate) fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((self.count as f64 * q).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Self::value(i).min(self.max);
            }
        }
        self.max
    }
}
