//! Writes the synthetic shop's events as NDJSON to stdout:
//!
//!     cargo run --release -p patron-workload --example shop_events -- 1000000 > events.ndjson
//!
//! Arguments: number of events (default 100000), customers (default 100000), seed (default 7).

use std::io::{BufWriter, Write};

use patron_workload::{EventStream, ShopConfig};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>());
    let events = args.next().and_then(Result::ok).unwrap_or(100_000) as usize;
    let customers = args.next().and_then(Result::ok).unwrap_or(100_000) as usize;
    let seed = args.next().and_then(Result::ok).unwrap_or(7);
    let mut out = BufWriter::new(std::io::stdout().lock());
    // Event time runs open-ended from the start; starting in 2010 keeps a
    // million events in the past (the engine rejects events over a day ahead).
    let config =
        ShopConfig { customers, id_prefix: "cap".into(), start_ms: 1_262_304_000_000, ..ShopConfig::default() };
    for line in EventStream::new(config, seed).take(events) {
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush()
}
