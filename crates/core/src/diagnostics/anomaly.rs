//! The learned per-well anomaly model: PCA on standardised, affinity-normalised features of the
//! well's healthy baseline, with Hotelling T² (inside the model plane) and SPE/Q (off it)
//! control limits set from the training scores. Missing features are imputed with the
//! baseline mean, so a dropped channel contributes nothing rather than an alarm.

use super::stats::{Welford, symmetric_eigen};

/// Names of the features the model sees, in order (all ratios to the baseline at the
/// running frequency, so they sit near 1 whatever the frequency). The intake pressure and the
/// GOR are left to the rules: they move with every normal operation (rate changes, well tests,
/// water-cut and reservoir drift), so a model of the training hours would flag them for days.
pub const FEATURES: [&str; 7] = [
    "current_ratio",
    "head_ratio",
    "flow_ratio",
    "vibration_ratio",
    "winding_rise_ratio",
    "volts_per_hz_ratio",
    "efficiency_ratio",
];
pub const NF: usize = FEATURES.len();

/// The features of a well without a frequency channel, in the same slots: its speed is
/// unknown, so the model sees what a speed change leaves alone (see `WellEngine`): the load per
/// unit of head and the flow at the head's speed in place of current and flow, no head.
pub const SPEED_FREE_FEATURES: [&str; NF] = [
    "current_per_head_ratio",
    "head_ratio",
    "flow_per_root_head_ratio",
    "vibration_ratio",
    "winding_rise_ratio",
    "volts_per_hz_ratio",
    "efficiency_ratio",
];

pub type FeatureVec = [Option<f64>; NF];

#[derive(Clone, Debug)]
pub struct AnomalyModel {
    mean: [f64; NF],
    std: [f64; NF],
    /// Principal directions kept (columns) and their variances.
    components: Vec<[f64; NF]>,
    variances: Vec<f64>,
    /// Pointwise limits: the well's own training quantile.
    pub t2_limit: f64,
    pub spe_limit: f64,
    /// Alarm limits: the quantile × margin, never below what a healthy Gaussian baseline
    /// reaches by chance (χ²-like floors), so a narrow training window cannot make every
    /// later operating point an alarm.
    pub t2_alarm: f64,
    pub spe_alarm: f64,
}

/// Score of one reading.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AnomalyScore {
    pub t2: f64,
    pub spe: f64,
    /// max(T²/limit, SPE/limit): above 1 is outside the healthy envelope (pointwise).
    pub score: f64,
    /// The same over the alarm limits.
    pub alarm_score: f64,
}

fn quantile_of(mut v: Vec<f64>, quantile: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * quantile).round() as usize;
    v[i.min(v.len() - 1)]
}

impl AnomalyModel {
    /// Fits the model; `None` with fewer than 30 usable vectors.
    ///
    /// The pointwise limits are calibrated out of sample: a probe model fitted on the first
    /// two thirds of the training window scores the last third (training samples are in time
    /// order), and the ratio of its out-of-sample to in-sample quantile widens the full model's
    /// in-sample quantile. A model only ever scored on the data it was fitted to would call the
    /// slightest later drift an anomaly.
    pub fn fit(
        samples: &[FeatureVec],
        variance_kept: f64,
        std_floor: f64,
        quantile: f64,
        margin: f64,
    ) -> Option<AnomalyModel> {
        let mut model = Self::fit_in_sample(samples, variance_kept, std_floor, quantile, margin)?;
        let split = samples.len() * 2 / 3;
        if samples.len() >= 90
            && let Some(probe) = Self::fit_in_sample(
                &samples[..split],
                variance_kept,
                std_floor,
                quantile,
                margin,
            )
        {
            let (t2s, spes): (Vec<f64>, Vec<f64>) = samples[split..]
                .iter()
                .map(|x| probe.t2_spe(&standardise(x, &probe.mean, &probe.std)))
                .unzip();
            let widen_t2 = (quantile_of(t2s, quantile) / probe.t2_limit).max(1.0);
            let widen_spe = (quantile_of(spes, quantile) / probe.spe_limit).max(1.0);
            model.t2_limit *= widen_t2;
            model.spe_limit *= widen_spe;
            model.t2_alarm = model.t2_alarm.max(model.t2_limit * margin);
            model.spe_alarm = model.spe_alarm.max(model.spe_limit * margin);
        }
        Some(model)
    }

    fn fit_in_sample(
        samples: &[FeatureVec],
        variance_kept: f64,
        std_floor: f64,
        quantile: f64,
        margin: f64,
    ) -> Option<AnomalyModel> {
        if samples.len() < 30 {
            return None;
        }
        let mut stats = [Welford::default(); NF];
        for s in samples {
            for (k, v) in s.iter().enumerate() {
                if let Some(v) = v {
                    stats[k].push(*v);
                }
            }
        }
        let mut mean = [0.0; NF];
        let mut std = [1.0; NF];
        for k in 0..NF {
            mean[k] = stats[k].mean().unwrap_or(1.0);
            std[k] = stats[k].std().max(std_floor);
        }
        let z: Vec<[f64; NF]> = samples
            .iter()
            .map(|s| standardise(s, &mean, &std))
            .collect();
        let mut cov = vec![vec![0.0; NF]; NF];
        for row in &z {
            for i in 0..NF {
                for j in 0..NF {
                    cov[i][j] += row[i] * row[j];
                }
            }
        }
        let n = z.len() as f64;
        for r in cov.iter_mut() {
            for c in r.iter_mut() {
                *c /= n - 1.0;
            }
        }
        let (values, vectors) = symmetric_eigen(&cov);
        let total: f64 = values.iter().map(|v| v.max(0.0)).sum::<f64>().max(1e-12);
        let mut kept = 0;
        let mut acc = 0.0;
        while kept < NF - 1 && acc / total < variance_kept {
            acc += values[kept].max(0.0);
            kept += 1;
        }
        let kept = kept.max(1);
        let components: Vec<[f64; NF]> = (0..kept)
            .map(|c| {
                let mut v = [0.0; NF];
                for (r, item) in v.iter_mut().enumerate() {
                    *item = vectors[r][c];
                }
                v
            })
            .collect();
        // Variance floor: a direction the baseline never explored still gets unit variance in
        // standardised units, so it cannot blow up T².
        let variances: Vec<f64> = values[..kept].iter().map(|v| v.max(1.0)).collect();
        let mut model = AnomalyModel {
            mean,
            std,
            components,
            variances,
            t2_limit: 1.0,
            spe_limit: 1.0,
            t2_alarm: 1.0,
            spe_alarm: 1.0,
        };
        let mut t2s: Vec<f64> = Vec::with_capacity(z.len());
        let mut spes: Vec<f64> = Vec::with_capacity(z.len());
        for row in &z {
            let (t2, spe) = model.t2_spe(row);
            t2s.push(t2);
            spes.push(spe);
        }
        let q = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            let i = ((v.len() as f64 - 1.0) * quantile).round() as usize;
            v[i.min(v.len() - 1)]
        };
        // The limits are the well's own: a high quantile of its training scores. (A tiny floor
        // only keeps a constant training signal from dividing by zero.)
        model.t2_limit = q(&mut t2s).max(1e-9);
        model.spe_limit = q(&mut spes).max(1e-9);
        model.t2_alarm = (model.t2_limit * margin).max(3.0 * kept as f64 + 10.0);
        model.spe_alarm = (model.spe_limit * margin).max(3.0 * (NF - kept) as f64 + 6.0);
        Some(model)
    }

    fn t2_spe(&self, z: &[f64; NF]) -> (f64, f64) {
        let mut t2 = 0.0;
        let mut recon = [0.0; NF];
        for (c, comp) in self.components.iter().enumerate() {
            let t: f64 = comp.iter().zip(z).map(|(a, b)| a * b).sum();
            t2 += t * t / self.variances[c];
            for k in 0..NF {
                recon[k] += t * comp[k];
            }
        }
        let spe = (0..NF).map(|k| (z[k] - recon[k]).powi(2)).sum();
        (t2, spe)
    }

    pub fn score(&self, x: &FeatureVec) -> AnomalyScore {
        let z = standardise(x, &self.mean, &self.std);
        let (t2, spe) = self.t2_spe(&z);
        AnomalyScore {
            t2,
            spe,
            score: (t2 / self.t2_limit).max(spe / self.spe_limit),
            alarm_score: (t2 / self.t2_alarm).max(spe / self.spe_alarm),
        }
    }

    /// Follows the well's slow normal drift: moves the centre of the model towards `x` by
    /// `weight` (the caller decides when a reading is normal enough to learn from).
    pub fn adapt(&mut self, x: &FeatureVec, weight: f64) {
        for (mean, v) in self.mean.iter_mut().zip(x) {
            if let Some(v) = v
                && v.is_finite()
            {
                *mean += weight * (v - *mean);
            }
        }
    }

    /// The features that contribute most to the deviation, largest first (for evidence).
    /// `names` are the features' names ([`FEATURES`] or [`SPEED_FREE_FEATURES`]).
    pub fn top_contributors(
        &self,
        x: &FeatureVec,
        n: usize,
        names: &[&'static str; NF],
    ) -> Vec<(&'static str, f64)> {
        let z = standardise(x, &self.mean, &self.std);
        let mut c: Vec<(&'static str, f64)> = names.iter().copied().zip(z).collect();
        c.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
        c.truncate(n);
        c
    }
}

fn standardise(x: &FeatureVec, mean: &[f64; NF], std: &[f64; NF]) -> [f64; NF] {
    let mut z = [0.0; NF];
    for k in 0..NF {
        if let Some(v) = x[k] {
            // Clamp so one wild value cannot dominate everything else.
            z[k] = ((v - mean[k]) / std[k]).clamp(-50.0, 50.0);
        }
    }
    z
}
