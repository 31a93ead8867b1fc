//! Whole-population kernels over a [`CustomerBook`]: fit every model, score
//! every customer, label segments, and build the `customers` Arrow batch.
//!
//! ```text
//! book ──► histories (model time unit) ──► fit BG/NBD, MBG/NBD, Pareto/NBD, Gamma-Gamma
//!   │                                              │
//!   └────► score inputs (whole days) ──► Scorer::score_all ──► segment_population ──► RecordBatch
//! ```

use arrow::record_batch::RecordBatch;
use patron_model::{Currency, Timestamp, customers_schema};
use patron_score::{
    ClvConfig, FitReport, GammaGammaParams, History, LifecycleStage, ParameterCovariance, PurchaseModel,
    PurchaseParams, ScoreInput, Scorer, Scores, SegmentConfig, SegmentInput, Segments, SpendHistory, fit_gamma_gamma,
    fit_purchase_model_within, segment_population,
};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::book::CustomerBook;
use crate::chunk::{Chunk, Groups};
use crate::customer_row::{RowClock, customer_batch};
use crate::{Result, StateError};

/// Time unit the models are fitted and reported in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeUnit {
    /// Days (default).
    #[default]
    Days,
    /// Weeks (the BTYD literature's unit for CDNOW).
    Weeks,
}

impl TimeUnit {
    /// Days in one unit.
    pub fn days(self) -> f64 {
        match self {
            Self::Days => 1.0,
            Self::Weeks => 7.0,
        }
    }

    /// `days` or `weeks`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Days => "days",
            Self::Weeks => "weeks",
        }
    }
}

/// How customers are scored.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScoringConfig {
    /// Purchase model behind `p_alive`, `churn_risk`, `expected_orders_90d`, `clv`.
    pub model: PurchaseModel,
    /// CLV horizon, discounting and margin.
    pub clv: ClvConfig,
    /// Segment thresholds.
    pub segments: SegmentConfig,
    /// Unit the models are fitted and reported in.
    pub time_unit: TimeUnit,
}

impl Default for ScoringConfig {
    fn default() -> Self {
        Self {
            model: PurchaseModel::MbgNbd,
            clv: ClvConfig::default(),
            segments: SegmentConfig::default(),
            time_unit: TimeUnit::Days,
        }
    }
}

/// The outcome of fitting every model on a book.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelFits {
    /// Unit of the parameters.
    pub time_unit: TimeUnit,
    /// Each purchase model's fit, or why it failed.
    pub purchase: Vec<(PurchaseModel, std::result::Result<FitReport<PurchaseParams>, String>)>,
    /// The Gamma-Gamma fit, or why it failed.
    pub gamma_gamma: std::result::Result<FitReport<GammaGammaParams>, String>,
    /// Mean value of all purchase occasions, base-currency major units (the
    /// order value used when Gamma-Gamma cannot give one).
    pub mean_occasion_value: f64,
    /// The "now" the fit was made at.
    #[serde(with = "millis")]
    pub fitted_at: Timestamp,
}

/// A [`Timestamp`] as its Unix milliseconds.
mod millis {
    use patron_model::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(at: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(at.millis())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        i64::deserialize(d).map(Timestamp::from_millis)
    }
}

impl ModelFits {
    /// The fits as a snapshot stores them: CBOR, which keeps every `f64`
    /// bit for bit (JSON text does not, without a slower parser), so the
    /// restored scorer is the one that was fitted. `None` if they cannot be encoded.
    pub fn to_bytes(&self) -> Option<Vec<u8>> {
        let mut bytes = Vec::new();
        ciborium::into_writer(self, &mut bytes).ok()?;
        Some(bytes)
    }

    /// Reads what [`Self::to_bytes`] wrote.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        ciborium::from_reader(bytes).ok()
    }

    /// The fitted parameters of `model`, if its fit succeeded.
    pub fn params(&self, model: PurchaseModel) -> Option<&FitReport<PurchaseParams>> {
        self.purchase.iter().find(|(m, _)| *m == model).and_then(|(_, r)| r.as_ref().ok())
    }
}

/// What a population of buyers contributes to a model fit, in a form that
/// neither "now" nor the population's split changes: a fleet's partitions
/// each send theirs, [`FitInputs::merge`] joins them, and [`FitInputs::fit`]
/// fits what a single node holding every customer would fit, bit for bit
/// (the fit reads sorted, counted tables and exact integer sums).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FitInputs {
    /// Buyers by (repeat occasions, days from first to last purchase, day of
    /// the first purchase), with their number; ascending.
    pub histories: Vec<((u32, u32, i32), u64)>,
    /// Spends that inform Gamma-Gamma by (repeat occasions, bits of the mean
    /// repeat value in base-currency major units), with their number; ascending.
    pub spends: Vec<((u32, u64), u64)>,
    /// Purchase occasions of every buyer.
    pub occasions: u64,
    /// Their value, base-currency minor units.
    pub occasion_value_minor: i128,
    /// The latest event time of the population (Unix milliseconds).
    pub watermark_ms: Option<i64>,
}

impl FitInputs {
    /// The inputs of buyers given as their score inputs (at any "now"), with
    /// their occasions and the value of those in minor units.
    pub fn of_buyers(buyers: impl Iterator<Item = (ScoreInput, u32, i64)>, watermark: Option<Timestamp>) -> Self {
        let mut out = Self { watermark_ms: watermark.map(Timestamp::millis), ..Self::default() };
        let mut histories = Vec::new();
        let mut spends = Vec::new();
        for (input, occasions, value_minor) in buyers {
            // The first purchase day: `tenure_days` counts from it to `now_day`.
            let first_day = input.now_day - input.tenure_days as i32;
            histories.push(((input.frequency, input.recency_days, first_day), 1));
            if input.spend.is_informative() {
                spends.push(((input.spend.repeat_occasions, input.spend.mean_repeat_value.to_bits()), 1));
            }
            out.occasions += u64::from(occasions);
            out.occasion_value_minor += i128::from(value_minor);
        }
        out.histories = counted(histories);
        out.spends = counted(spends);
        out
    }

    /// The inputs of every part's buyers together.
    pub fn merge(parts: &[FitInputs]) -> Self {
        Self {
            histories: counted(parts.iter().flat_map(|p| p.histories.iter().copied()).collect()),
            spends: counted(parts.iter().flat_map(|p| p.spends.iter().copied()).collect()),
            occasions: parts.iter().map(|p| p.occasions).sum(),
            occasion_value_minor: parts.iter().map(|p| p.occasion_value_minor).sum(),
            watermark_ms: parts.iter().filter_map(|p| p.watermark_ms).max(),
        }
    }

    /// The latest event time of the population.
    pub fn watermark(&self) -> Option<Timestamp> {
        self.watermark_ms.map(Timestamp::from_millis)
    }

    /// Number of buyers.
    pub fn buyers(&self) -> u64 {
        self.histories.iter().map(|(_, n)| n).sum()
    }

    /// Fits every model on these buyers as of `now`. Every model gets the full
    /// fit budget except when `primary` names the one that scores customers:
    /// the others then get a shorter one, so a slow reported model cannot stall a refit.
    pub fn fit(
        &self,
        now: Timestamp,
        time_unit: TimeUnit,
        primary: Option<PurchaseModel>,
        minor_per_major: f64,
    ) -> ModelFits {
        let days = time_unit.days();
        let now_day = now.day();
        let histories: Vec<(History, u64)> = self
            .histories
            .iter()
            .map(|&((frequency, recency, first_day), n)| {
                let tenure = i64::from(now_day) - i64::from(first_day);
                let tenure = tenure.max(i64::from(recency)) as f64;
                (History::new(frequency, f64::from(recency) / days, tenure / days), n)
            })
            .collect();
        let spends: Vec<SpendHistory> = self
            .spends
            .iter()
            .flat_map(|&((repeat_occasions, mean_bits), n)| {
                let spend = SpendHistory { repeat_occasions, mean_repeat_value: f64::from_bits(mean_bits) };
                std::iter::repeat_n(spend, n as usize)
            })
            .collect();
        let mean_occasion_value = if self.occasions == 0 {
            0.0
        } else {
            self.occasion_value_minor as f64 / self.occasions as f64 / minor_per_major
        };
        fit_counted(&histories, &spends, mean_occasion_value, now, time_unit, primary)
    }
}

/// Sorts `rows` and adds up the counts of equal keys.
fn counted<K: Ord + Copy + Send>(mut rows: Vec<(K, u64)>) -> Vec<(K, u64)> {
    rows.par_sort_unstable_by_key(|(key, _)| *key);
    let mut out: Vec<(K, u64)> = Vec::with_capacity(rows.len());
    for (key, n) in rows {
        match out.last_mut() {
            Some((last, total)) if *last == key => *total += n,
            _ => out.push((key, n)),
        }
    }
    out
}

/// Fits BG/NBD, MBG/NBD, Pareto/NBD and Gamma-Gamma on every buyer as of `now`.
pub fn fit_models(book: &CustomerBook, now: Timestamp, time_unit: TimeUnit, currency: Currency) -> ModelFits {
    let minor = currency.minor_per_major();
    let buyers: Vec<(ScoreInput, u32, i64)> = book
        .records()
        .par_iter()
        .filter_map(|r| r.score_input(now.day(), minor).map(|i| (i, r.occasions(), r.total_occasion_value_minor())))
        .collect();
    FitInputs::of_buyers(buyers.into_iter(), Some(now)).fit(now, time_unit, None, minor)
}

/// Wall-time budget of the purchase models that are fitted only to be reported.
const REPORTED_MODEL_BUDGET: std::time::Duration = std::time::Duration::from_secs(5);

/// Fits every model on histories with their number of customers.
/// `mean_occasion_value` is the fallback order value in major units. Every
/// model gets the full fit budget, except when `primary` names the one that
/// scores customers: the others then get a shorter one, so a slow reported
/// model (typically Pareto/NBD on young data) cannot stall a refit.
fn fit_counted(
    histories: &[(History, u64)],
    spends: &[SpendHistory],
    mean_occasion_value: f64,
    now: Timestamp,
    time_unit: TimeUnit,
    primary: Option<PurchaseModel>,
) -> ModelFits {
    let compressed = patron_score::CompressedHistories::from_counts(histories);
    let purchase = PurchaseModel::ALL
        .iter()
        .map(|&model| {
            let budget = match primary {
                Some(p) if p != model => REPORTED_MODEL_BUDGET,
                _ => patron_score::FIT_TIME_BUDGET,
            };
            let fit = match &compressed {
                Ok(data) => fit_purchase_model_within(model, data, budget)
                    .map(|fit| {
                        let uncertainty = patron_score::purchase_uncertainty(&fit.params, data, budget);
                        fit.with_uncertainty(uncertainty)
                    })
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            (model, fit)
        })
        .collect();
    ModelFits {
        time_unit,
        purchase,
        gamma_gamma: fit_gamma_gamma(spends)
            .map(|fit| {
                let uncertainty = patron_score::gamma_gamma_uncertainty(&fit.params, spends);
                fit.with_uncertainty(uncertainty)
            })
            .map_err(|e| e.to_string()),
        mean_occasion_value,
        fitted_at: now,
    }
}

/// A scorer (in days) for the configured model of `fits`.
pub fn scorer_for(fits: &ModelFits, config: &ScoringConfig) -> Result<Scorer> {
    let fit = fits.params(config.model).ok_or_else(|| StateError::ModelUnavailable {
        model: config.model,
        reason: fits
            .purchase
            .iter()
            .find(|(m, _)| *m == config.model)
            .and_then(|(_, r)| r.as_ref().err().cloned())
            .unwrap_or_else(|| "not fitted".into()),
    })?;
    Ok(Scorer::new(
        fit.params.rescale_time(1.0 / fits.time_unit.days()),
        fits.gamma_gamma.as_ref().ok().map(|g| g.params),
        fits.mean_occasion_value,
        &config.clv,
        1.0,
    ))
}

/// The covariance of the parameters behind `scorer_for(fits, config)`, for
/// its CLV intervals.
pub fn parameter_covariance(fits: &ModelFits, config: &ScoringConfig) -> ParameterCovariance {
    let purchase = fits.params(config.model).map_or(&[][..], |f| f.log_covariance.as_slice());
    let spend = fits.gamma_gamma.as_ref().map_or(&[][..], |f| f.log_covariance.as_slice());
    ParameterCovariance::from_row_major(purchase, spend)
}

/// Scores and labels of every record of a book, aligned with `book.records()`.
#[derive(Clone, Debug)]
pub struct ScoredBook {
    /// Model inputs (None for customers who never bought).
    pub inputs: Vec<Option<ScoreInput>>,
    /// Model scores (None for customers who never bought).
    pub scores: Vec<Option<Scores>>,
    /// Population-relative labels (None for customers who never bought).
    pub segments: Vec<Option<Segments>>,
    /// Lifecycle stage of everyone.
    pub lifecycle: Vec<LifecycleStage>,
    /// The "now" of the scores.
    pub scored_at: Timestamp,
}

impl ScoredBook {
    /// Summaries without scores, for when no model could be fitted: labels that
    /// need a model are null, lifecycle is `prospect`, `first_time` or `repeat`.
    pub fn unscored(book: &CustomerBook, now: Timestamp, currency: Currency) -> Self {
        let minor = currency.minor_per_major();
        let inputs: Vec<Option<ScoreInput>> = book.records().iter().map(|r| r.score_input(now.day(), minor)).collect();
        let lifecycle = inputs
            .iter()
            .map(|i| match i {
                None => LifecycleStage::Prospect,
                Some(i) if i.frequency == 0 => LifecycleStage::FirstTime,
                Some(_) => LifecycleStage::Repeat,
            })
            .collect();
        Self { scores: vec![None; inputs.len()], segments: vec![None; inputs.len()], inputs, lifecycle, scored_at: now }
    }
}

/// Scores every customer with the configured model.
pub fn score_book(
    book: &CustomerBook,
    fits: &ModelFits,
    config: &ScoringConfig,
    now: Timestamp,
    currency: Currency,
) -> Result<ScoredBook> {
    let scorer = scorer_for(fits, config)?;
    let minor = currency.minor_per_major();
    let now_day = now.day();
    let inputs: Vec<Option<ScoreInput>> = book.records().par_iter().map(|r| r.score_input(now_day, minor)).collect();
    let buyers: Vec<ScoreInput> = inputs.iter().flatten().copied().collect();
    let buyer_scores =
        scorer.score_all_with_intervals(&buyers, &parameter_covariance(fits, config)).map_err(StateError::Scoring)?;
    let buyer_records: Vec<_> = book.records().par_iter().filter(|r| r.has_purchased()).collect();
    let segment_inputs: Vec<SegmentInput> = buyer_records
        .par_iter()
        .zip(buyers.par_iter())
        .zip(buyer_scores.par_iter())
        .map(|((record, input), s)| SegmentInput {
            days_since_last_purchase: f64::from(input.tenure_days - input.recency_days),
            occasions: record.occasions(),
            revenue: record.revenue_minor as f64 / minor,
            clv: s.clv,
            p_alive: s.p_alive,
        })
        .collect();
    let buyer_segments = segment_population(&segment_inputs, &config.segments);
    let mut scores = Vec::with_capacity(inputs.len());
    let mut segments = Vec::with_capacity(inputs.len());
    let mut lifecycle = Vec::with_capacity(inputs.len());
    let (mut s_iter, mut g_iter) = (buyer_scores.into_iter(), buyer_segments.into_iter());
    for input in &inputs {
        if input.is_some() {
            let (s, g) = (s_iter.next(), g_iter.next());
            lifecycle.push(g.map_or(LifecycleStage::FirstTime, |g| g.lifecycle_stage));
            scores.push(s);
            segments.push(g);
        } else {
            scores.push(None);
            segments.push(None);
            lifecycle.push(LifecycleStage::Prospect);
        }
    }
    Ok(ScoredBook { inputs, scores, segments, lifecycle, scored_at: now })
}

/// The `customers` table (DESIGN.md §4) as one Arrow batch, money in
/// `currency`: the scored rows put into one chunk and derived like the SQL
/// table's.
pub fn customers_batch(
    book: &CustomerBook,
    scored: &ScoredBook,
    currency: Currency,
    config: &ScoringConfig,
) -> Result<RecordBatch> {
    let mut chunk = Chunk::with_capacity(book.len());
    for (i, row) in book.records().iter().enumerate() {
        chunk.push(row.customer_id(), *row.summary(), scored.scores[i], scored.segments[i]);
    }
    let clock = RowClock::new(scored.scored_at, currency.minor_per_major(), config);
    customer_batch(customers_schema(), &chunk.view(Groups::ALL), &clock)
}
