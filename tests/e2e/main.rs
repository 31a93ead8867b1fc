//! End-to-end tests: the real `patron` binary on real files.

mod backtest;
mod batch_cdnow;
mod batch_inputs;
mod campaigns;
mod cluster;
mod customer_views;
mod demo;
mod fail_stop;
mod hostile;
mod layering;
mod loadgen;
mod recs;
mod serve;
mod settings;
mod sources;
mod sql;
mod status_page;
mod tls;
