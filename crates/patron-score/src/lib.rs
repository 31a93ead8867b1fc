//! Patron's scoring math: pure functions over slices of customer summaries.
//!
//! - [`purchase`]: BG/NBD, MBG/NBD and Pareto/NBD — log-likelihood, P(alive),
//!   expected purchases.
//! - [`fit`]: maximum-likelihood fits over all customers (compressed, rayon).
//! - [`gamma_gamma`]: expected order value.
//! - [`clv`]: discounted CLV and [`Scorer`], which scores one customer (the
//!   per-event path) or a whole population (the rescore kernel).
//! - [`interval`]: the 90% interval of CLV from the parameters' uncertainty.
//! - [`segments`]: RFM, value tier, relationship, lifecycle stage.
//! - [`validation`]: predictions judged against a holdout period.
//!
//! No I/O and no clocks: time arrives as numbers in the model's unit.
//!
//! ```
//! use patron_score::{BetaGeoParams, History, PurchaseParams};
//! // Published BG/NBD estimates on the CDNOW sample (weeks).
//! let model = PurchaseParams::BgNbd(BetaGeoParams { r: 0.243, alpha: 4.414, a: 0.793, b: 2.426 });
//! let regular = History::new(5, 36.0, 38.86);
//! let gone_quiet = History::new(5, 5.0, 38.86);
//! assert!(model.p_alive(regular).unwrap() > model.p_alive(gone_quiet).unwrap());
//! ```
#![deny(missing_docs)]

pub mod clv;
pub mod fit;
pub mod gamma_gamma;
pub mod interval;
pub mod purchase;
pub mod ranking;
pub mod segments;
pub mod special;
pub mod validation;

pub use clv::{ClvConfig, DiscountSchedule, ScoreCache, ScoreInput, Scorer, Scores, discounted_purchases_if_alive};
pub use fit::{
    AtBound, CompressedHistories, FIT_TIME_BUDGET, FitReport, Uncertainty, fit_gamma_gamma, fit_purchase_model,
    fit_purchase_model_compressed, fit_purchase_model_within, gamma_gamma_uncertainty, purchase_log_likelihood,
    purchase_uncertainty,
};
pub use gamma_gamma::{GammaGammaParams, SpendHistory};
pub use interval::{CLV_INTERVAL_Z, ParameterCovariance, clv_interval};
pub use purchase::{BetaGeoParams, History, ParetoParams, PurchaseModel, PurchaseParams};
pub use ranking::{Similarity, average_precision, hit_rate, ndcg, recall};
pub use segments::{
    Aliveness, LifecycleStage, PopulationRanks, Relationship, RfmSegment, SegmentConfig, SegmentCuts,
    SegmentDefinition, SegmentInput, Segments, ValueRuns, ValueTier, definitions as segment_definitions,
    lifecycle_stage, quintile_scores, relationship, rfm_segment, segment_population,
};
pub use validation::{
    CalibrationRow, DecileRow, HoldoutCase, HoldoutPrediction, PredictionQuality, assess, calibration_table,
    predict_holdout,
};

/// Errors of the scoring math.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    /// A function was called outside its domain.
    #[error("{function}: argument out of domain: {detail}")]
    Domain {
        /// Which function.
        function: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A series or iteration did not converge.
    #[error("{function} did not converge: {detail}")]
    NotConverged {
        /// Which function.
        function: &'static str,
        /// The arguments.
        detail: String,
    },
    /// The data cannot identify the model's parameters.
    #[error("cannot fit {model}: {detail}")]
    NotIdentified {
        /// Which model.
        model: &'static str,
        /// Why.
        detail: String,
    },
    /// A customer history is impossible (e.g. recency after tenure).
    #[error(
        "customer history #{index} is invalid: {history:?} (need 0 <= recency <= tenure, finite, recency 0 when frequency is 0)"
    )]
    InvalidHistory {
        /// Position in the input slice.
        index: usize,
        /// The history.
        history: History,
    },
    /// An input to a scoring kernel is invalid.
    #[error("invalid scoring input: {0}")]
    InvalidInput(String),
    /// A CLV setting outside its range.
    #[error("{setting} = {value}: {expected}")]
    InvalidSetting {
        /// The setting's name, as in `patron.toml` (`margin`, `horizon_days`, …).
        setting: &'static str,
        /// The value given.
        value: f64,
        /// What it must be.
        expected: &'static str,
    },
    /// Unknown purchase model name.
    #[error("unknown purchase model {0:?} (expected bgnbd, mbgnbd or pareto_nbd)")]
    UnknownModel(String),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, ScoreError>;
