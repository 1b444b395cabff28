//! Small streaming statistics used by the engine: time-constant EWMAs (so behaviour does not
//! depend on the sampling interval, 1 s or 60 s), and a dense symmetric eigen-solver for the
//! anomaly model's PCA.

/// Exponentially weighted mean and variance with a time constant in seconds. Irregular sampling
/// is handled by weighting each update with `1 − exp(−dt/τ)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ewma {
    pub mean: f64,
    pub var: f64,
    last_ts: i64,
    init: bool,
    /// Readings taken in since the start (saturating).
    count: u32,
    /// The last (dt, τ, weight): sampling is usually regular, and `exp` per channel and reading
    /// was a visible share of the server's CPU during bulk ingestion.
    memo: Option<(f64, f64, f64)>,
}

impl Ewma {
    pub fn update(&mut self, ts_micros: i64, x: f64, tau_s: f64) {
        if !x.is_finite() {
            return;
        }
        self.count = self.count.saturating_add(1);
        if !self.init {
            self.mean = x;
            self.var = 0.0;
            self.init = true;
            self.last_ts = ts_micros;
            return;
        }
        let dt = ((ts_micros - self.last_ts) as f64 / 1e6).max(0.0);
        self.last_ts = ts_micros;
        let a = match self.memo {
            Some((m_dt, m_tau, a)) if m_dt == dt && m_tau == tau_s => a,
            _ => {
                let a = shared_weight(dt, tau_s);
                self.memo = Some((dt, tau_s, a));
                a
            }
        };
        let d = x - self.mean;
        self.mean += a * d;
        self.var = (1.0 - a) * (self.var + a * d * d);
    }

    /// As [`Ewma::update`], but the deviation that feeds the variance is clipped to
    /// `clip_sigmas` standard deviations (at least `clip_floor`): one outlier lifts the
    /// variance by a bounded share; a lasting fluctuation still grows it geometrically, by up
    /// to `1 + a (clip_sigmas² − 1)` per reading. The mean is not clipped.
    pub fn update_clipped(
        &mut self,
        ts_micros: i64,
        x: f64,
        tau_s: f64,
        clip_sigmas: f64,
        clip_floor: f64,
    ) {
        if !x.is_finite() || !self.init {
            self.update(ts_micros, x, tau_s);
            return;
        }
        let clip = (clip_sigmas * self.std()).max(clip_floor);
        let d = x - self.mean;
        let clipped = d.clamp(-clip, clip);
        // Update as usual, then put back the variance the clipped deviation allows.
        let var_before = self.var;
        self.update(ts_micros, x, tau_s);
        let a = self.memo.map_or(0.0, |(_, _, a)| a);
        self.var = (1.0 - a) * (var_before + a * clipped * clipped);
    }

    pub fn reset(&mut self) {
        *self = Ewma::default();
    }

    pub fn is_init(&self) -> bool {
        self.init
    }

    pub fn value(&self) -> Option<f64> {
        self.init.then_some(self.mean)
    }

    pub fn std(&self) -> f64 {
        self.var.max(0.0).sqrt()
    }

    /// Readings taken in since the start.
    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn last_ts(&self) -> i64 {
        self.last_ts
    }
}

/// Slots of [`WEIGHTS`].
const WEIGHT_SLOTS: usize = 16;

thread_local! {
    /// The weights `1 − exp(−dt/τ)` last worked out on this thread, by the bits of (dt, τ),
    /// direct-mapped. An [`Ewma`]'s own memo misses on every reading when readings come at
    /// irregular intervals (a gateway's clock jitter), but the EWMAs of one reading (some 50
    /// updates in an engine) share its interval and a handful of time constants: the first
    /// works the weight out, the others find it here. The same inputs give the same bits, so
    /// nothing else changes.
    static WEIGHTS: [std::cell::Cell<(u64, u64, f64)>; WEIGHT_SLOTS] =
        const { [const { std::cell::Cell::new((u64::MAX, u64::MAX, 0.0)) }; WEIGHT_SLOTS] };
}

/// `1 − exp(−dt/τ)`, from [`WEIGHTS`] when this thread worked it out lately. (No dt is NaN,
/// so no key matches an empty slot.) Out of line, as `exp` was: inlined, it made
/// [`Ewma::update`] too large to inline, which cost more on regular sampling than it saved.
#[inline(never)]
fn shared_weight(dt: f64, tau_s: f64) -> f64 {
    let key = (dt.to_bits(), tau_s.to_bits());
    let slot = ((key.0 ^ key.1.rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) as usize
        % WEIGHT_SLOTS;
    WEIGHTS.with(|w| {
        let (d, t, a) = w[slot].get();
        if (d, t) == key {
            return a;
        }
        let a = 1.0 - (-dt / tau_s).exp();
        w[slot].set((key.0, key.1, a));
        a
    })
}

/// Running mean and variance (Welford), for baselines.
#[derive(Clone, Copy, Debug, Default)]
pub struct Welford {
    pub n: u64,
    mean: f64,
    m2: f64,
}

impl Welford {
    pub fn push(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }
    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then_some(self.mean)
    }
    pub fn std(&self) -> f64 {
        if self.n < 2 {
            0.0
        } else {
            (self.m2 / (self.n - 1) as f64).sqrt()
        }
    }
}

/// Eigen-decomposition of a symmetric matrix (cyclic Jacobi). Returns eigenvalues in
/// descending order and the matching eigenvectors as columns (`vectors[row][col]`).
// Rotations update two rows of the same matrix at once, which index loops express best.
#[allow(clippy::needless_range_loop)]
pub fn symmetric_eigen(matrix: &[Vec<f64>]) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = matrix.len();
    let mut a: Vec<Vec<f64>> = matrix.to_vec();
    let mut v = vec![vec![0.0; n]; n];
    for (i, row) in v.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |j| *j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum();
        if off < 1e-18 {
            break;
        }
        for p in 0..n {
            for q in (p + 1)..n {
                if a[p][q].abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum().max(0.0) * 2.0 - 1.0;
                let t = t / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for row in a.iter_mut() {
                    let (akp, akq) = (row[p], row[q]);
                    row[p] = c * akp - s * akq;
                    row[q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p][k], a[q][k]);
                    a[p][k] = c * apk - s * aqk;
                    a[q][k] = s * apk + c * aqk;
                }
                for row in v.iter_mut() {
                    let vkp = row[p];
                    let vkq = row[q];
                    row[p] = c * vkp - s * vkq;
                    row[q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|x, y| a[*y][*y].total_cmp(&a[*x][*x]));
    let values = order.iter().map(|&i| a[i][i]).collect();
    let vectors = (0..n)
        .map(|r| order.iter().map(|&c| v[r][c]).collect())
        .collect();
    (values, vectors)
}

/// The key of `v` whose integer order is `f64::total_cmp`'s order (the transform
/// `total_cmp` itself applies to both sides of every comparison). It is its own inverse.
#[inline(always)]
fn order_key(v: f64) -> i64 {
    let bits = v.to_bits() as i64;
    bits ^ (((bits >> 63) as u64) >> 1) as i64
}

/// The value whose [`order_key`] is `k`.
#[inline(always)]
fn from_order_key(k: i64) -> f64 {
    f64::from_bits((k ^ (((k >> 63) as u64) >> 1) as i64) as u64)
}

/// The median of the last `N` values, kept as a sorted copy beside the arrival order: a push
/// moves at most `N` numbers instead of selecting anew (the noise gauges of every channel ask
/// for it on every reading, and a fresh select of 15 was a fifth of the engine's time). Both
/// hold [`order_key`]s, so the sorting compares integers (`f64::total_cmp`'s order, hence
/// the same median bit for bit), and a value equal to the one it replaces (a quantised gauge
/// repeating itself, a step of exactly one resolution again) changes nothing.
#[derive(Clone, Copy, Debug)]
pub struct SlidingMedian<const N: usize> {
    /// Arrival order, oldest at `head` once full.
    ring: [i64; N],
    sorted: [i64; N],
    len: usize,
    head: usize,
}

impl<const N: usize> Default for SlidingMedian<N> {
    fn default() -> Self {
        SlidingMedian {
            ring: [0; N],
            sorted: [0; N],
            len: 0,
            head: 0,
        }
    }
}

impl<const N: usize> SlidingMedian<N> {
    /// Takes in a value, dropping the oldest once `N` are held.
    #[inline]
    pub fn push(&mut self, v: f64) {
        let k = order_key(v);
        if self.len < N {
            let mut slot = self.head + self.len;
            if slot >= N {
                slot -= N;
            }
            self.ring[slot] = k;
            let mut at = self.len;
            while at > 0 && self.sorted[at - 1] > k {
                self.sorted[at] = self.sorted[at - 1];
                at -= 1;
            }
            self.sorted[at] = k;
            self.len += 1;
            return;
        }
        let old = std::mem::replace(&mut self.ring[self.head], k);
        self.head += 1;
        if self.head == N {
            self.head = 0;
        }
        if k == old {
            return;
        }
        // The new value takes the oldest one's place, then moves to where it sorts: one pass
        // over the values between the two (successive readings are mostly close).
        let mut at = self.sorted.partition_point(|x| *x < old);
        if k > old {
            while at + 1 < N && self.sorted[at + 1] < k {
                self.sorted[at] = self.sorted[at + 1];
                at += 1;
            }
        } else {
            while at > 0 && self.sorted[at - 1] > k {
                self.sorted[at] = self.sorted[at - 1];
                at -= 1;
            }
        }
        self.sorted[at] = k;
    }

    pub fn clear(&mut self) {
        self.len = 0;
        self.head = 0;
    }

    pub fn is_full(&self) -> bool {
        self.len == N
    }

    /// The median (the upper one for an even count), once the window is full.
    #[inline]
    pub fn median(&self) -> Option<f64> {
        self.is_full().then(|| from_order_key(self.sorted[N / 2]))
    }

    /// The median of the values held so far (the upper one for an even count), once any is.
    #[inline]
    pub fn median_so_far(&self) -> Option<f64> {
        (self.len > 0).then(|| from_order_key(self.sorted[self.len / 2]))
    }
}

/// The last `N` values in arrival order, for a median asked for now and then: a push stores
/// one number, and [`RecentWindow::median`] selects from a copy (the same value as
/// [`SlidingMedian::median`] of the same pushes, bit for bit: both order by `total_cmp`).
/// Keeping a sorted copy up to date on every push only pays when the median is read on
/// every push.
#[derive(Clone, Debug)]
pub struct RecentWindow<const N: usize> {
    /// Arrival order, oldest at `head` once full.
    ring: [f64; N],
    len: usize,
    head: usize,
}

impl<const N: usize> Default for RecentWindow<N> {
    fn default() -> Self {
        RecentWindow {
            ring: [0.0; N],
            len: 0,
            head: 0,
        }
    }
}

impl<const N: usize> RecentWindow<N> {
    /// Takes in a value, dropping the oldest once `N` are held.
    #[inline]
    pub fn push(&mut self, v: f64) {
        if self.len < N {
            let mut slot = self.head + self.len;
            if slot >= N {
                slot -= N;
            }
            self.ring[slot] = v;
            self.len += 1;
            return;
        }
        self.ring[self.head] = v;
        self.head += 1;
        if self.head == N {
            self.head = 0;
        }
    }

    pub fn clear(&mut self) {
        self.len = 0;
        self.head = 0;
    }

    pub fn is_full(&self) -> bool {
        self.len == N
    }

    /// The median (the upper one for an even count), once the window is full.
    pub fn median(&self) -> Option<f64> {
        if !self.is_full() {
            return None;
        }
        let mut keys = self.ring.map(order_key);
        let (_, m, _) = keys.select_nth_unstable(N / 2);
        Some(from_order_key(*m))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_sliding_median_is_the_median_of_the_last_values() {
        let mut m = SlidingMedian::<15>::default();
        let mut rng = crate::rng::SimRng::new(7);
        let mut all = Vec::new();
        for k in 0..2_000 {
            // Repeats and gauge-like steps included: a quantised channel repeats values.
            let v = match k % 4 {
                0 => (rng.unit() * 10.0).round(),
                _ => rng.unit() * 10.0,
            };
            m.push(v);
            all.push(v);
            if all.len() < 15 {
                assert_eq!(m.median(), None);
                continue;
            }
            let mut last = all[all.len() - 15..].to_vec();
            last.sort_by(f64::total_cmp);
            assert_eq!(m.median(), Some(last[7]), "after {} values", all.len());
            if k % 500 == 499 {
                m.clear();
                all.clear();
            }
        }
    }

    /// Pushes random sequences into a `SlidingMedian` and a `RecentWindow` (values drawn from a small set, so duplicates and ties are
    /// common, with ±0, negatives and infinities; no NaN) and checks the median bit for bit
    /// against sorting the last `N` values and picking the middle one, with a `clear` now and
    /// then.
    fn matches_sort_and_pick<const N: usize>(seed: u64) {
        let mut rng = crate::rng::SimRng::new(seed);
        let palette: Vec<f64> = (0..rng.int(1, 40))
            .map(|_| match rng.int(0, 9) {
                0 => 0.0,
                1 => -0.0,
                2 => f64::INFINITY,
                3 => f64::NEG_INFINITY,
                4 => rng.int(-5, 5) as f64,
                5 => f64::MIN_POSITIVE / 2.0,
                _ => (rng.unit() - 0.3) * 100.0,
            })
            .collect();
        let mut sliding = super::SlidingMedian::<N>::default();
        let mut recent = super::RecentWindow::<N>::default();
        let mut window: Vec<f64> = Vec::new();
        for k in 0..3_000 {
            if rng.chance(0.002) {
                sliding.clear();
                recent.clear();
                window.clear();
            }
            let v = if rng.chance(0.5) {
                *rng.pick(&palette)
            } else {
                // A gauge-like walk: repeats, one-quantum steps.
                window.last().copied().unwrap_or(0.0) + rng.int(-1, 1) as f64 * 0.25
            };
            sliding.push(v);
            recent.push(v);
            window.push(v);
            if window.len() > N {
                window.remove(0);
            }
            let want = (window.len() == N).then(|| {
                let mut sorted = window.clone();
                sorted.sort_by(f64::total_cmp);
                sorted[N / 2]
            });
            assert_eq!(
                sliding.median().map(f64::to_bits),
                want.map(f64::to_bits),
                "N = {N}, seed {seed}, push {k}: {window:?}"
            );
            assert_eq!(
                recent.median().map(f64::to_bits),
                want.map(f64::to_bits),
                "RecentWindow, N = {N}, seed {seed}, push {k}: {window:?}"
            );
        }
    }

    #[test]
    fn sliding_medians_of_every_window_size_match_sort_and_pick() {
        macro_rules! sizes {
            ($($n:literal)*) => {
                $(for seed in 0..8 {
                    matches_sort_and_pick::<$n>(seed);
                })*
            };
        }
        sizes!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31);
    }

    use super::*;

    #[test]
    fn ewma_is_sampling_invariant() {
        let mut fast = Ewma::default();
        let mut slow = Ewma::default();
        for i in 0..=3600 {
            fast.update(i * 1_000_000, 10.0, 300.0);
            if i % 60 == 0 {
                slow.update(i * 1_000_000, 10.0, 300.0);
            }
        }
        for i in 3601..=4200 {
            fast.update(i * 1_000_000, 20.0, 300.0);
            if i % 60 == 0 {
                slow.update(i * 1_000_000, 20.0, 300.0);
            }
        }
        assert!(
            (fast.mean - slow.mean).abs() < 0.3,
            "{} {}",
            fast.mean,
            slow.mean
        );
    }

    /// EWMAs updated in turn at jittered intervals with a few time constants (the weights then
    /// come from the thread's shared table, not their own memo) give the same bits as working
    /// `1 − exp(−dt/τ)` out for every update.
    #[test]
    fn ewmas_sharing_weights_match_working_each_out() {
        fn reference(e: &mut (f64, f64, i64, bool), ts: i64, x: f64, tau: f64) {
            if !e.3 {
                *e = (x, 0.0, ts, true);
                return;
            }
            let dt = ((ts - e.2) as f64 / 1e6).max(0.0);
            e.2 = ts;
            let a = 1.0 - (-dt / tau).exp();
            let d = x - e.0;
            e.0 += a * d;
            e.1 = (1.0 - a) * (e.1 + a * d * d);
        }
        let mut rng = crate::rng::SimRng::new(23);
        let taus = [300.0, 900.0, 3_600.0, 30.0, 300.0, 7_200.0];
        let mut kept = [Ewma::default(); 40];
        let mut anew = [(0.0, 0.0, 0, false); 40];
        let mut ts = 0i64;
        for _ in 0..2_000 {
            // Mostly jittered, sometimes regular, sometimes the same timestamp again.
            ts += match rng.int(0, 9) {
                0 => 0,
                1..=3 => 10_000_000,
                _ => rng.int(1_000_000, 20_000_000),
            };
            for (k, (e, r)) in kept.iter_mut().zip(anew.iter_mut()).enumerate() {
                if rng.chance(0.1) {
                    continue;
                }
                let x = rng.normal() * 5.0 + 40.0;
                let tau = taus[k % taus.len()];
                e.update(ts, x, tau);
                reference(r, ts, x, tau);
                assert_eq!(e.mean.to_bits(), r.0.to_bits());
                assert_eq!(e.var.to_bits(), r.1.to_bits());
            }
        }
    }

    #[test]
    fn jacobi_finds_eigenpairs() {
        let m = vec![
            vec![4.0, 1.0, 0.0],
            vec![1.0, 3.0, 0.0],
            vec![0.0, 0.0, 1.0],
        ];
        let (vals, vecs) = symmetric_eigen(&m);
        assert!(vals[0] >= vals[1] && vals[1] >= vals[2]);
        for k in 0..3 {
            for r in 0..3 {
                let mv: f64 = (0..3).map(|c| m[r][c] * vecs[c][k]).sum();
                assert!((mv - vals[k] * vecs[r][k]).abs() < 1e-9);
            }
        }
    }
}

/// The typical interval between readings: the median of the last few. A stop, a dropout or a
/// backfill's gap is one long interval among many regular ones and leaves it alone, where a
/// time-weighted mean would jump (its weight grows with the gap).
#[derive(Clone, Copy, Debug, Default)]
pub struct RecentIntervals {
    /// The last 15 intervals, each rounded to `f32` (as they were once stored: the median is
    /// the same bit for bit), kept sorted as they slide rather than sorted anew per reading.
    secs: SlidingMedian<15>,
    /// The median, kept up to date on each push (read several times per reading).
    median: Option<f64>,
}

impl RecentIntervals {
    pub fn push(&mut self, secs: f64) {
        if !secs.is_finite() || secs <= 0.0 {
            return;
        }
        self.secs.push(secs as f32 as f64);
        self.median = self.secs.median_so_far();
    }

    /// The median interval (s), once any was seen.
    pub fn typical(&self) -> Option<f64> {
        self.median
    }
}

#[cfg(test)]
mod intervals_tests {
    /// The former `RecentIntervals`: the last 15 as `f32`, sorted anew on every push.
    #[derive(Default)]
    struct SortedAnew {
        secs: [f32; 15],
        len: u8,
        next: u8,
        median: Option<f64>,
    }

    impl SortedAnew {
        fn push(&mut self, secs: f64) {
            if !secs.is_finite() || secs <= 0.0 {
                return;
            }
            self.secs[self.next as usize] = secs as f32;
            self.next = (self.next + 1) % self.secs.len() as u8;
            self.len = (self.len + 1).min(self.secs.len() as u8);
            let mut v = self.secs;
            let seen = &mut v[..self.len as usize];
            seen.sort_unstable_by(f32::total_cmp);
            self.median = Some(seen[seen.len() / 2] as f64);
        }
    }

    #[test]
    fn recent_intervals_match_sorting_anew() {
        let mut rng = crate::rng::SimRng::new(23);
        for round in 0..50 {
            let mut kept = super::RecentIntervals::default();
            let mut anew = SortedAnew::default();
            assert_eq!(kept.typical(), None);
            for k in 0..400 {
                let secs = match rng.int(0, 9) {
                    0 => 0.0,
                    1 => -1.0,
                    2 => f64::NAN,
                    3 => f64::INFINITY,
                    4 => 1e300,
                    5 => 1e-60,
                    6 => rng.int(1, 4) as f64 * 10.0,
                    _ => rng.unit() * 60.0 + 1.0 / 3.0,
                };
                kept.push(secs);
                anew.push(secs);
                assert_eq!(
                    kept.typical().map(f64::to_bits),
                    anew.median.map(f64::to_bits),
                    "round {round}, push {k}"
                );
            }
        }
    }
}
