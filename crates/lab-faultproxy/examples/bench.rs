//! Measures the fault proxy's pass-through cost: `cargo run --release -p lab-faultproxy
//! --example bench [bulk MiB] [round trips]`.

use lab_faultproxy::bench::{BenchOptions, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut options = BenchOptions::default();
    if let Some(mib) = args.next() {
        options.bulk_bytes = mib.parse::<u64>()? * 1024 * 1024;
    }
    if let Some(n) = args.next() {
        options.round_trips = n.parse()?;
    }
    let report = run(&options).await?;
    println!("{report}");
    Ok(())
}
