//! Command-line interface (DESIGN.md §5). Flag names are a contract.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use patron_ingest::{ColumnMapping, FileFormat};
use patron_score::PurchaseModel;
use patron_state::TimeUnit;

use crate::units;

/// Patron: streaming customer scoring (CLV, churn risk, segments).
#[derive(Debug, Parser)]
#[command(name = "patron", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Score a file of transactions in batch: fit the models, score every
    /// customer, write customers.parquet and model_params.json.
    Score(Box<ScoreArgs>),
    /// Validate the models on a file: fit on a calibration period, predict
    /// each customer's holdout purchases, P(alive) and CLV, and compare them
    /// with what happened (and with two baselines); writes customers.parquet,
    /// report.json and SVG plots.
    Backtest(Box<BacktestArgs>),
    /// Run the streaming engine with its HTTP API (events in, scores out).
    Serve(ServeArgs),
    /// Zero-setup demo: the engine and API on embedded defaults, fed by a
    /// synthetic shop at a steady rate, with a live summary.
    Demo(DemoArgs),
    /// Push a file of transactions or events to a running server.
    Replay(Box<ReplayArgs>),
    /// Run one read-only SQL query against a server (or a data directory
    /// offline) and print the result.
    Query(QueryArgs),
    /// Evaluate recommendations offline on a transactions file: temporal
    /// leave-last-basket-out split, Patron against popularity, buy again and
    /// item-kNN; prints the metrics and writes them as JSON.
    EvalRecs(Box<EvalRecsArgs>),
    /// Capacity test: drive a running server over HTTP with a realistic
    /// event stream; report throughput, latency and freshness percentiles,
    /// server RSS and CPU, and write them as JSON.
    Loadgen(LoadgenArgs),
    /// Create, list, show or close campaigns on a running server.
    Campaign(CampaignArgs),
    /// Cluster mode: the partition map, lag and snapshots of a fleet.
    Cluster(ClusterArgs),
}

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  patron cluster status --nats nats://127.0.0.1:4222")]
pub(crate) struct ClusterArgs {
    #[command(subcommand)]
    pub(crate) action: ClusterAction,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ClusterAction {
    /// Print the live nodes, and per partition its owner, applied sequence,
    /// lag and newest snapshot, as the broker sees them.
    Status {
        /// The fleet's NATS server(s), comma separated.
        #[arg(long, value_name = "URL", default_value = "nats://127.0.0.1:4222")]
        nats: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Cluster mode of `serve` (all flags need `--nats`).
#[derive(Debug, Args)]
pub(crate) struct FleetArgs {
    /// Run as a node of a fleet whose event log is this NATS JetStream server
    /// (comma separated for several). Events are published there and applied
    /// by the partition's owner; the local write-ahead log is not used.
    #[arg(long, value_name = "URL")]
    pub(crate) nats: Option<String>,
    /// This node's id, unique in the fleet (default: the host name and HTTP port).
    #[arg(long, value_name = "ID", requires = "nats")]
    pub(crate) node_id: Option<String>,
    /// Partitions of the fleet; every node must use the same number, fixed
    /// for the life of the stream.
    #[arg(long, value_name = "N", default_value_t = 64, requires = "nats", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub(crate) partitions: u32,
    /// Shared directory where each partition's `customers` and `products`
    /// are written as Parquet at every snapshot (for `patron query --fleet`).
    #[arg(long, value_name = "DIR", requires = "nats")]
    pub(crate) export_dir: Option<PathBuf>,
    /// Copies of the stream and buckets the first node creates (3 on a
    /// three-server broker cluster).
    #[arg(long, value_name = "N", default_value_t = 1, requires = "nats")]
    pub(crate) nats_replicas: usize,
    /// How long a partition lease lives without renewal: a dead node's
    /// partitions move after at most this long.
    #[arg(long, value_name = "DURATION", default_value = "10s", requires = "nats", value_parser = units::duration)]
    pub(crate) lease_time: Duration,
    /// The HTTP base URL other nodes use to reach this one (default: the
    /// bound HTTP address).
    #[arg(long, value_name = "URL", requires = "nats")]
    pub(crate) advertise: Option<String>,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    patron campaign create --id winback-2026-12 --name 'Win back' --channel email \\\n      \
      --audience \"SELECT customer_id FROM customers WHERE lifecycle_stage = 'at_risk'\" \\\n      \
      --control-share 0.1 --cost-per-contact 0.05 --currency EUR --ends-at 2026-12-31T00:00:00Z\n  \
    patron campaign list\n  \
    patron campaign show winback-2026-12\n  \
    patron campaign close winback-2026-12")]
pub(crate) struct CampaignArgs {
    #[command(subcommand)]
    pub(crate) action: CampaignAction,
    /// Base URL of the server.
    #[arg(long, global = true, value_name = "URL", default_value = "http://127.0.0.1:8080", value_parser = units::server_url)]
    pub(crate) url: String,
    /// Bearer token with the campaign (or admin) role (default: $PATRON_TOKEN).
    #[arg(long, global = true, value_name = "TOKEN", env = "PATRON_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum CampaignAction {
    /// Create a campaign: freeze its audience, split it, log it.
    Create(CampaignCreateArgs),
    /// Every campaign with its results.
    List,
    /// One campaign with its results and whether they are significant.
    Show {
        /// The campaign's id.
        campaign_id: String,
    },
    /// Freeze a campaign's results.
    Close {
        /// The campaign's id.
        campaign_id: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct CampaignCreateArgs {
    /// The campaign's id (unique, never reused).
    #[arg(long = "id", value_name = "ID")]
    pub(crate) campaign_id: String,
    /// What marketers call it (default: the id).
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Contact channel: email, sms or push.
    #[arg(long)]
    pub(crate) channel: String,
    /// Read-only SQL returning a customer_id column.
    #[arg(long = "audience", value_name = "SQL")]
    pub(crate) audience_sql: String,
    /// Share of the audience held out as control.
    #[arg(long, default_value_t = 0.1)]
    pub(crate) control_share: f64,
    /// What one contact costs, in --currency.
    #[arg(long, value_name = "AMOUNT", default_value = "0")]
    pub(crate) cost_per_contact: String,
    /// Currency of --cost-per-contact (default: the server's base currency).
    #[arg(long, value_name = "CODE")]
    pub(crate) currency: Option<String>,
    /// Start of the attribution window, RFC 3339 (default: now).
    #[arg(long, value_name = "TIME")]
    pub(crate) starts_at: Option<String>,
    /// End of the attribution window, RFC 3339 (default: open).
    #[arg(long, value_name = "TIME")]
    pub(crate) ends_at: Option<String>,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    patron loadgen --url http://127.0.0.1:8080 --rate 100000 --duration 30s --server-pid $(pgrep -f 'patron serve')\n  \
    patron loadgen --rate 0 --duration 1m --connections 8 --batch 2000   # as fast as the server accepts")]
pub(crate) struct LoadgenArgs {
    /// Base URL of the server.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080", value_parser = units::server_url)]
    pub(crate) url: String,
    /// Target events per second (open loop); 0 sends as fast as the server accepts (closed loop).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub(crate) rate: u64,
    /// How long to send: 10s, 5m, 250ms, 1h (a bare number is seconds).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = units::duration)]
    pub(crate) duration: Duration,
    /// Sent before measuring (within --duration): latency and freshness count only after it.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = units::duration_or_zero)]
    pub(crate) warmup: Duration,
    /// Customers in the synthetic shop.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub(crate) customers: usize,
    /// Products in its catalogue.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub(crate) products: usize,
    /// Concurrent connections.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub(crate) connections: usize,
    /// Events per request.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub(crate) batch: usize,
    /// Share of extra malformed events (each must be rejected).
    #[arg(long, value_name = "SHARE", default_value_t = 0.001)]
    pub(crate) malformed: f64,
    /// Share of events sent twice (each must come back as a duplicate).
    #[arg(long, value_name = "SHARE", default_value_t = 0.001)]
    pub(crate) duplicates: f64,
    /// Mix in campaign responses for this campaign's treatment members (read
    /// from the server before the run), at --responses share of the events.
    #[arg(long, value_name = "ID", requires = "responses")]
    pub(crate) campaign: Option<String>,
    /// Share of events that are campaign responses (with --campaign).
    #[arg(long, value_name = "SHARE", requires = "campaign")]
    pub(crate) responses: Option<f64>,
    /// Time between freshness markers.
    #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = units::duration)]
    pub(crate) marker_every: Duration,
    /// Also run an analyst: the --sql query over POST /v1/sql every DURATION
    /// (0s: back to back) while events are sent; reports its latency and the
    /// longest shard lock a scan held.
    #[arg(long, value_name = "DURATION", value_parser = units::duration_or_zero)]
    pub(crate) sql_every: Option<Duration>,
    /// The analyst's query.
    #[arg(long, value_name = "SQL", default_value = patron_loadgen::DEFAULT_ANALYST_SQL)]
    pub(crate) sql: String,
    /// The server's process id, to report its RSS and CPU (seconds, and µs per accepted event).
    #[arg(long, value_name = "PID")]
    pub(crate) server_pid: Option<u32>,
    /// MiB of request bodies built before the clock starts, so that sending
    /// costs the client almost nothing (0: build them while sending).
    #[arg(long, value_name = "MIB", default_value_t = patron_loadgen::DEFAULT_PREBUILD_BYTES >> 20)]
    pub(crate) prebuild_mb: usize,
    /// Bearer token with the ingest and query roles (default: $PATRON_TOKEN).
    #[arg(long, value_name = "TOKEN", env = "PATRON_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// Seed of the synthetic shop.
    #[arg(long, default_value_t = 42)]
    pub(crate) seed: u64,
    /// Give the shop planted tastes (a home category per customer, a
    /// complement per product), a known structure for judging
    /// recommendations with --dump and `patron eval-recs`.
    #[arg(long)]
    pub(crate) planted_tastes: bool,
    /// Where to write the JSON result (default: a new file under bench-results/loadgen/).
    #[arg(long, value_name = "FILE")]
    pub(crate) out: Option<PathBuf>,
    /// Write the generated events to this NDJSON file instead of sending them
    /// (the same events for a comparison with another system).
    #[arg(long, value_name = "FILE", requires = "events")]
    pub(crate) dump: Option<PathBuf>,
    /// Events to write with --dump.
    #[arg(long, value_name = "N")]
    pub(crate) events: Option<u64>,
}

#[derive(Debug, Args)]
#[command(after_help = "Example (UCI Online Retail):\n  \
    patron eval-recs --input online_retail.csv.gz --currency GBP --customer-col CustomerID --time-col InvoiceDate \\\n    \
    --order-col InvoiceNo --product-col StockCode --quantity-col Quantity --price-col UnitPrice")]
pub(crate) struct EvalRecsArgs {
    /// File of transactions (CSV, CSV.gz, NDJSON events or Parquet).
    #[arg(long, value_name = "FILE")]
    pub(crate) input: PathBuf,
    /// Input format (default: from the file name).
    #[arg(long, value_enum)]
    pub(crate) format: Option<FormatArg>,
    /// Currency of the file's amounts.
    #[arg(long, value_name = "CODE", default_value = "EUR")]
    pub(crate) currency: String,
    /// Length of each recommendation list (the K of HitRate@K …).
    #[arg(long, value_name = "K", default_value_t = 10)]
    pub(crate) k: usize,
    /// Where to write the JSON result.
    #[arg(long, value_name = "FILE", default_value = "eval-recs.json")]
    pub(crate) out: PathBuf,
    /// Ignore every purchase on or after this date, as if the data ended
    /// there (the tuning period of a temporal hold-out).
    #[arg(long, value_name = "DATE", value_parser = units::day)]
    pub(crate) data_until: Option<i32>,
    /// Test only customers whose last basket is on or after this date
    /// (YYYY-MM-DD); earlier purchases are still history.
    #[arg(long, value_name = "DATE", value_parser = units::day)]
    pub(crate) test_from: Option<i32>,
    /// Test only customers whose last basket is before this date (YYYY-MM-DD).
    #[arg(long, value_name = "DATE", value_parser = units::day)]
    pub(crate) test_until: Option<i32>,
    /// Similarity of the neighbour kernel.
    #[arg(long, value_enum, default_value = "shrunk-cosine")]
    pub(crate) similarity: SimilarityArg,
    /// Pseudo-count of the shrunk cosine.
    #[arg(long, value_name = "ORDERS", default_value_t = 5.0)]
    pub(crate) shrinkage: f64,
    /// Products kept per customer profile.
    #[arg(long, value_name = "N", default_value_t = patron_state::record::DEFAULT_HISTORY)]
    pub(crate) history: usize,
    /// Days between refreshes of the shared models during the replay.
    #[arg(long, value_name = "DAYS", default_value_t = 1)]
    pub(crate) refresh_days: i32,
    /// Half-life of a customer's own purchases in the buy-again score, in
    /// that customer's purchase occasions.
    #[arg(long, value_name = "OCCASIONS", default_value_t = 8.0)]
    pub(crate) repeat_half_life: f64,
    /// Scale of the bought-with score relative to buy again.
    #[arg(long, value_name = "W", default_value_t = 0.05)]
    pub(crate) bought_with_weight: f64,
    /// Added to each product's repurchase rate in the buy-again score.
    #[arg(long, value_name = "B", default_value_t = 0.5)]
    pub(crate) repurchase_bias: f64,
    /// Weight of cross-basket co-purchases (0 counts only same-basket pairs).
    #[arg(long, value_name = "W", default_value_t = 0.5)]
    pub(crate) cross_basket_weight: f32,
    /// Products of a customer's history whose neighbours are candidates.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub(crate) anchors: usize,
    /// Co-purchase counters kept per product.
    #[arg(long, value_name = "N", default_value_t = 128)]
    pub(crate) counters: usize,
    /// Neighbours kept per product.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub(crate) neighbours: usize,
    /// Exponent of the product's sales trend in the buy-again score (0: ignore the trend).
    #[arg(long, value_name = "E", default_value_t = 0.5)]
    pub(crate) trend_exponent: f64,
    /// Exponent of a neighbour's sales trend in the discover list.
    #[arg(long, value_name = "E", default_value_t = patron_state::DiscoverWeights::default().trend_exponent)]
    pub(crate) discover_trend_exponent: f64,
    /// Scale of category-weighted popularity in the discover list (0: neighbours only, popular products fill the rest).
    #[arg(long, value_name = "W", default_value_t = patron_state::DiscoverWeights::default().popular_weight)]
    pub(crate) discover_popular_weight: f64,
    /// Minimum repurchase rate for recommending a product bought once again.
    #[arg(long, value_name = "RATE", default_value_t = 0.05)]
    pub(crate) min_repurchase_rate: f64,
    #[command(flatten)]
    pub(crate) mapping: MappingArgs,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum SimilarityArg {
    Cosine,
    ShrunkCosine,
    Jaccard,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  patron query \"SELECT rfm_segment, count(*), avg(clv) FROM customers GROUP BY 1\"\n  \
    patron query --format csv \"SELECT * FROM customers WHERE customer_id = '42'\"\n  \
    patron query --data-dir ./patron-data \"SELECT * FROM model_params\""
)]
pub(crate) struct QueryArgs {
    /// The SQL statement (one; read-only). Tables: customers, recommendations,
    /// similar_products, products, model_params, model_quality, rejected_events,
    /// campaigns, campaign_members, campaign_results, engine_stats.
    #[arg(value_name = "SQL")]
    pub(crate) sql: String,
    /// Base URL of a running server.
    #[arg(
        long,
        value_name = "URL",
        default_value = "http://127.0.0.1:8080",
        value_parser = units::server_url,
        conflicts_with = "data_dir"
    )]
    pub(crate) url: String,
    /// Query a data directory offline instead (recovers it; fails while a server holds it).
    #[arg(long, value_name = "DIR", conflicts_with = "fleet")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Query a fleet's export directory (`serve --export-dir`): its newest
    /// complete `customers` and `products` of every partition.
    #[arg(long, value_name = "DIR")]
    pub(crate) fleet: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub(crate) format: QueryFormatArg,
    /// Bearer token with the query role (default: $PATRON_TOKEN).
    #[arg(long, value_name = "TOKEN", env = "PATRON_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// Base currency of the data directory (offline only; default EUR, or
    /// `[currency]` base in --config).
    #[arg(long, value_name = "CODE", requires = "data_dir")]
    pub(crate) currency: Option<String>,
    /// The server's configuration file, for `[clv]` and `[currency]` (offline only).
    #[arg(long, value_name = "FILE", requires = "data_dir")]
    pub(crate) config: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum QueryFormatArg {
    Table,
    Csv,
    Json,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  patron replay --input fixtures/cdnow/cdnow_transactions.csv --url http://127.0.0.1:8080 --currency USD"
)]
pub(crate) struct ReplayArgs {
    /// File of transactions (CSV, CSV.gz, NDJSON events or Parquet).
    #[arg(long, value_name = "FILE")]
    pub(crate) input: PathBuf,
    /// Base URL of the server.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080", value_parser = units::server_url)]
    pub(crate) url: String,
    /// Events per second (0: as fast as the server accepts).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub(crate) rate: u64,
    /// Events per request.
    #[arg(long, value_name = "N", default_value_t = 8192)]
    pub(crate) batch: usize,
    /// Requests in flight at once.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub(crate) connections: usize,
    /// Input format (default: from the file name).
    #[arg(long, value_enum)]
    pub(crate) format: Option<FormatArg>,
    /// The NDJSON records are in a source's format (segment, ga4, shopify,
    /// snowplow) and are translated as `POST /v1/events?source=` does.
    #[arg(long, value_name = "SOURCE", value_parser = units::source)]
    pub(crate) source: Option<patron_sources::Source>,
    /// Currency of the file's amounts (must be the server's base currency or have a rate there).
    #[arg(long, value_name = "CODE", default_value = "EUR")]
    pub(crate) currency: String,
    #[command(flatten)]
    pub(crate) mapping: MappingArgs,
}

/// Where a server listens (`serve` and `demo`). A non-loopback address needs
/// auth tokens, so the demo, which has none, stays on loopback.
#[derive(Debug, Args)]
pub(crate) struct ListenArgs {
    /// HTTP listen address: the API and the status page at `/`.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080", value_parser = units::listen_address)]
    pub(crate) http: SocketAddr,
    /// PostgreSQL wire protocol listen address (psql, psycopg, BI tools); the
    /// password is a token with the query role when tokens are configured.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5433", value_parser = units::listen_address)]
    pub(crate) pg: SocketAddr,
    /// Arrow Flight SQL listen address (ADBC, pyarrow); bearer token with the
    /// query role when tokens are configured.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:50051", value_parser = units::listen_address)]
    pub(crate) flight: SocketAddr,
}

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Directory of the write-ahead log.
    #[arg(long, value_name = "DIR", default_value = "patron-data")]
    pub(crate) data_dir: PathBuf,
    #[command(flatten)]
    pub(crate) listen: ListenArgs,
    /// Events per second to stream.
    #[arg(long, value_name = "N", default_value_t = 2000)]
    pub(crate) rate: u64,
    /// Customers in the synthetic shop.
    #[arg(long, value_name = "N", default_value_t = 20_000)]
    pub(crate) customers: usize,
    /// How long to stream: 30s, 5m, 1h (a bare number is seconds).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = units::duration)]
    pub(crate) duration: Duration,
    /// Keep serving the API after streaming, until Ctrl-C (default: only when
    /// run in a terminal, so scripts and CI get a command that ends).
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub(crate) serve_after: Option<bool>,
    /// Seed of the synthetic shop.
    #[arg(long, default_value_t = 42)]
    pub(crate) seed: u64,
    /// Halfway through, the demo creates an e-mail campaign to every
    /// consenting buyer (control share 0.3) and plants this effect on the
    /// treatment group: their purchase rate × (1 + uplift). 0 plants no effect
    /// (the results should then show none); a negative value skips the campaign.
    #[arg(long, value_name = "UPLIFT", default_value_t = 0.5, allow_negative_numbers = true)]
    pub(crate) campaign_uplift: f64,
    /// Purchase model for the scores.
    #[arg(long, value_enum, default_value = "mbgnbd")]
    pub(crate) model: ModelArg,
}

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  patron serve --data-dir ./patron-data --http 127.0.0.1:8080\n  \
    curl -s localhost:8080/v1/events -H 'content-type: application/x-ndjson' --data-binary @events.ndjson")]
pub(crate) struct ServeArgs {
    /// Configuration file (auth tokens, TLS, `[clv]`, `[currency]`); see the README.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Directory of the write-ahead log.
    #[arg(long, value_name = "DIR", default_value = "patron-data")]
    pub(crate) data_dir: PathBuf,
    #[command(flatten)]
    pub(crate) listen: ListenArgs,
    /// Wall-clock limit of one SQL query.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = units::duration)]
    pub(crate) sql_timeout: Duration,
    /// Memory SQL operators may reserve (sorts, joins, aggregates).
    #[arg(long, value_name = "SIZE", default_value = "1GiB", value_parser = units::memory_size)]
    pub(crate) sql_memory: usize,
    /// Most rows one SQL result may have (larger results are refused, not cut).
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    pub(crate) sql_max_rows: usize,
    /// Most bytes one SQL result may hold (Arrow form), and the most one call of
    /// repeat/lpad/rpad/array_repeat/range may build.
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = units::memory_size)]
    pub(crate) sql_max_result_bytes: usize,
    /// SQL queries running at once (more wait up to 5 s, then get an error).
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub(crate) sql_concurrency: usize,
    /// Base currency of the engine (default EUR, or `[currency]` base in
    /// --config); events in a currency without a `[currency.rates]` line are rejected.
    #[arg(long, value_name = "CODE")]
    pub(crate) currency: Option<String>,
    /// Purchase model for p_alive, churn_risk, expected_orders_90d and clv.
    #[arg(long, value_enum, default_value = "mbgnbd")]
    pub(crate) model: ModelArg,
    /// Shard writer threads (default: one per core).
    #[arg(long, value_name = "N")]
    pub(crate) shards: Option<usize>,
    /// How far back in event time a re-sent event is recognised as a
    /// duplicate (whole days, or "forever"). Older events are refused with a
    /// reason once the fingerprints of their day have been forgotten, which
    /// happens at snapshots; memory is about 20-40 bytes per remembered event.
    #[arg(long, value_name = "DAYS", default_value = "35d", value_parser = units::dedup_horizon)]
    pub(crate) dedup_horizon: units::DedupHorizon,
    /// Largest request body (larger ones get 413).
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = units::memory_size)]
    pub(crate) body_limit: usize,
    /// Cap on request bytes being received, decoded or made durable at once
    /// (counted as they arrive); above it, requests get 503 with Retry-After.
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = units::size)]
    pub(crate) max_inflight_bytes: u64,
    /// Log records that may wait for the writer; beyond it, 429 with Retry-After.
    #[arg(long, value_name = "N")]
    pub(crate) log_queue: Option<usize>,
    /// "Now" for scoring: the latest event time (event) or the system clock (wall).
    #[arg(long, value_enum, default_value = "event")]
    pub(crate) clock: ClockArg,
    /// Time between automatic refits (only when new events arrived).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = units::duration)]
    pub(crate) refit_interval: Duration,
    /// Time between automatic snapshots (only when new events arrived); one is
    /// also written at shutdown.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = units::duration)]
    pub(crate) snapshot_interval: Duration,
    #[command(flatten)]
    pub(crate) fleet: FleetArgs,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum FormatArg {
    Csv,
    Ndjson,
    Parquet,
}

impl From<FormatArg> for FileFormat {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Csv => FileFormat::Csv,
            FormatArg::Ndjson => FileFormat::Ndjson,
            FormatArg::Parquet => FileFormat::Parquet,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum TimeUnitArg {
    Days,
    Weeks,
}

impl From<TimeUnitArg> for TimeUnit {
    fn from(t: TimeUnitArg) -> Self {
        match t {
            TimeUnitArg::Days => TimeUnit::Days,
            TimeUnitArg::Weeks => TimeUnit::Weeks,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum ClockArg {
    Event,
    Wall,
}

impl From<ClockArg> for patron_state::Clock {
    fn from(c: ClockArg) -> Self {
        match c {
            ClockArg::Event => patron_state::Clock::Event,
            ClockArg::Wall => patron_state::Clock::Wall,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum ModelArg {
    Bgnbd,
    Mbgnbd,
    #[value(name = "pareto_nbd")]
    ParetoNbd,
}

impl From<ModelArg> for PurchaseModel {
    fn from(m: ModelArg) -> Self {
        match m {
            ModelArg::Bgnbd => PurchaseModel::BgNbd,
            ModelArg::Mbgnbd => PurchaseModel::MbgNbd,
            ModelArg::ParetoNbd => PurchaseModel::ParetoNbd,
        }
    }
}

/// Which column of a CSV or Parquet file plays which role. Without flags,
/// columns are found by their usual names (customer_id/CustomerID, date/InvoiceDate, …).
#[derive(Clone, Debug, Default, Args)]
pub(crate) struct MappingArgs {
    /// Column with the customer id.
    #[arg(long, value_name = "COLUMN")]
    pub(crate) customer_col: Option<String>,
    /// Column with the purchase time.
    #[arg(long, value_name = "COLUMN")]
    pub(crate) time_col: Option<String>,
    /// Column with the order id; rows sharing it form one order (basket).
    #[arg(long, value_name = "COLUMN")]
    pub(crate) order_col: Option<String>,
    /// Column with the product id.
    #[arg(long, value_name = "COLUMN")]
    pub(crate) product_col: Option<String>,
    /// Column with the product category.
    #[arg(long, value_name = "COLUMN")]
    pub(crate) category_col: Option<String>,
    /// Column with the quantity (default 1).
    #[arg(long, value_name = "COLUMN")]
    pub(crate) quantity_col: Option<String>,
    /// Column with the row's total amount.
    #[arg(long, value_name = "COLUMN", conflicts_with = "price_col")]
    pub(crate) amount_col: Option<String>,
    /// Column with the unit price (row total = price × quantity).
    #[arg(long, value_name = "COLUMN")]
    pub(crate) price_col: Option<String>,
    /// strftime format of the time column (common formats are detected without it).
    #[arg(long, value_name = "FORMAT")]
    pub(crate) time_format: Option<String>,
    /// Field delimiter of a CSV file: `,`, `;`, `tab` or `|` (default: detected from the header line).
    #[arg(long, value_name = "CHAR", value_parser = units::delimiter)]
    pub(crate) delimiter: Option<u8>,
}

impl MappingArgs {
    pub(crate) fn to_mapping(&self, currency: &str) -> ColumnMapping {
        ColumnMapping {
            customer: self.customer_col.clone(),
            time: self.time_col.clone(),
            order: self.order_col.clone(),
            product: self.product_col.clone(),
            category: self.category_col.clone(),
            quantity: self.quantity_col.clone(),
            amount: self.amount_col.clone(),
            price: self.price_col.clone(),
            time_format: self.time_format.clone(),
            currency: Some(currency.to_owned()),
            delimiter: self.delimiter,
        }
    }
}

#[derive(Debug, Args)]
#[command(after_help = "Example (the CDNOW sample, calibration period as in Fader, Hardie & Lee 2005):\n  \
    patron score --input fixtures/cdnow/cdnow_transactions.csv --observation-end 1997-09-30 --time-unit weeks")]
pub(crate) struct ScoreArgs {
    /// File of transactions (CSV, CSV.gz, NDJSON events or Parquet).
    #[arg(long, value_name = "FILE")]
    pub(crate) input: PathBuf,
    /// Input format (default: from the file name).
    #[arg(long, value_enum)]
    pub(crate) format: Option<FormatArg>,
    /// The NDJSON records are in a source's format (segment, ga4, shopify,
    /// snowplow) and are translated as `POST /v1/events?source=` does.
    #[arg(long, value_name = "SOURCE", value_parser = units::source)]
    pub(crate) source: Option<patron_sources::Source>,
    /// Directory for customers.parquet, recommendations.parquet and model_params.json.
    #[arg(long, value_name = "DIR", default_value = "patron-out")]
    pub(crate) out: PathBuf,
    /// "Now": a date (00:00 UTC) or RFC 3339 time; later events are ignored.
    /// Default: the latest event time in the file.
    #[arg(long, value_name = "DATE|TS")]
    pub(crate) observation_end: Option<String>,
    /// Time unit of the fitted parameters.
    #[arg(long, value_enum, default_value = "days")]
    pub(crate) time_unit: TimeUnitArg,
    /// Purchase model for p_alive, churn_risk, expected_orders_90d and clv.
    #[arg(long, value_enum, default_value = "mbgnbd")]
    pub(crate) model: ModelArg,
    /// Base currency: the currency of every output, and of a CSV or Parquet
    /// file's amounts (default EUR, or `[currency]` base in --config). NDJSON
    /// events say their own currency and are converted with `[currency.rates]`.
    #[arg(long, value_name = "CODE")]
    pub(crate) currency: Option<String>,
    /// A server configuration file: its `[clv]` and `[currency]` sections are
    /// used (the flags below override `[clv]`), so scores match the server's.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// CLV horizon in days (default 365, or `[clv]` horizon_days).
    #[arg(long, value_name = "DAYS")]
    pub(crate) horizon_days: Option<f64>,
    /// Annual discount rate for CLV (default 0.10, or `[clv]` annual_discount_rate).
    #[arg(long, value_name = "RATE")]
    pub(crate) discount_rate: Option<f64>,
    /// Margin as a share of revenue, for CLV (default 1, or `[clv]` margin).
    #[arg(long, value_name = "SHARE")]
    pub(crate) margin: Option<f64>,
    /// Yearly cost of keeping one customer, base currency, subtracted over
    /// the horizon in net_clv (default 0, or `[clv]` retention_cost_per_year).
    #[arg(long, value_name = "AMOUNT")]
    pub(crate) retention_cost_per_year: Option<f64>,
    /// How many top customers by CLV to print.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub(crate) top: usize,
    /// Recommendations per customer in recommendations.parquet (0: do not write it).
    #[arg(long, value_name = "K", default_value_t = 10)]
    pub(crate) recommendations: usize,
    /// Recommend only products each customer never bought (the "discover" list).
    #[arg(long)]
    pub(crate) new_only: bool,
    #[command(flatten)]
    pub(crate) mapping: MappingArgs,
}

#[derive(Debug, Args)]
#[command(after_help = "Example (the CDNOW sample: 39 weeks of calibration, 39 of holdout):\n  \
    patron backtest --input fixtures/cdnow/cdnow_transactions.csv --currency USD \\\n    \
    --calibration-end 1997-09-30 --holdout-end 1998-06-30 --time-unit weeks --out backtest-cdnow")]
pub(crate) struct BacktestArgs {
    /// File of transactions (CSV, CSV.gz, NDJSON events or Parquet).
    #[arg(long, value_name = "FILE")]
    pub(crate) input: PathBuf,
    /// Input format (default: from the file name).
    #[arg(long, value_enum)]
    pub(crate) format: Option<FormatArg>,
    /// End of the calibration period: a date (00:00 UTC) or RFC 3339 time.
    /// The models see only events up to it.
    #[arg(long, value_name = "DATE|TS")]
    pub(crate) calibration_end: String,
    /// End of the holdout period: the predictions are judged on the events
    /// after the calibration end and up to this time; later events are ignored.
    #[arg(long, value_name = "DATE|TS")]
    pub(crate) holdout_end: String,
    /// Time unit of the fitted parameters.
    #[arg(long, value_enum, default_value = "days")]
    pub(crate) time_unit: TimeUnitArg,
    /// Purchase model judged.
    #[arg(long, value_enum, default_value = "mbgnbd")]
    pub(crate) model: ModelArg,
    /// Base currency (as in `patron score`).
    #[arg(long, value_name = "CODE")]
    pub(crate) currency: Option<String>,
    /// A server configuration file for `[clv]` and `[currency]` (as in `patron score`).
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Directory for customers.parquet, report.json, calibration.svg and decile_lift.svg.
    #[arg(long, value_name = "DIR", default_value = "patron-backtest")]
    pub(crate) out: PathBuf,
    #[command(flatten)]
    pub(crate) mapping: MappingArgs,
}
