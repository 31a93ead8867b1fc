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
    for line in EventStream::new(ShopConfig { customers, id_prefix: "cap".into(), ..ShopConfig::default() }, seed).take(events) {
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush()
}
