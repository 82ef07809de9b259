//! Read a dataset in its official format and draw shuffled batches on a prefetch thread:
//! `cargo run --release -p ail-data --example read_dataset -- [builtin | PATH]`.

use std::sync::Arc;

use ail_data::{BatchLoader, DataSource, LoadOptions, LoaderConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let source = DataSource::parse(&std::env::args().nth(1).unwrap_or_else(|| "builtin".into()));
    let options = LoadOptions { side: Some(32), ..Default::default() };
    let (set, report) = source.load(options, &|_| {})?;
    println!("{source}: {} images of {:?}, classes {:?}", set.len(), set.shape(), set.class_names);
    if !report.skipped.is_empty() {
        println!("skipped {} unreadable files", report.skipped.len());
    }
    let loader = BatchLoader::new(Arc::new(set), LoaderConfig::new(256, 0))?;
    println!("{} batches of 256 per epoch", loader.steps_per_epoch());
    for batch in loader.take(3) {
        println!("step {} (epoch {}): {:?}, first labels {:?}", batch.step, batch.epoch, batch.shape, &batch.labels[..8]);
    }
    Ok(())
}
