//! Pretrains AI-SimCLR (K = 2) for 20 steps on the built-in images through the library alone, with
//! an observer of its own that prints the losses and the kNN accuracies, and stops the run early
//! when asked to (`AIL_EXAMPLE_STOP_AT=12` stops after step 12 with a checkpoint).
//!
//! ```sh
//! cargo run --release -p ail-core --example pretrain [-- OUT_DIR]
//! ```

use ail_augment::device::{DeviceChoice, select};
use ail_core::pretrain::{Data, LogRow, Observer, PretrainConfig, RunOptions, pretrain};
use ail_core::{CoreError, Descriptor};

/// Prints what the run reports, and asks it to stop after `stop_at` steps.
struct Printer {
    stop_at: Option<u64>,
    done: u64,
}

impl Observer for Printer {
    fn message(&mut self, text: &str) {
        println!("{text}");
    }

    fn stepped(&mut self, done: u64) {
        self.done = done;
    }

    fn logged(&mut self, row: &LogRow) {
        println!("step {:>3}  i = [{}]  loss {:.4}  lr {:.2e}  {:.0} images/s", row.step, row.descriptor, row.loss, row.lr, row.images_per_second);
    }

    fn monitored(&mut self, step: u64, accuracies: &[(Descriptor, f64)]) {
        let parts: Vec<String> = accuracies.iter().map(|(d, a)| format!("[{d}] {:.1}%", a * 100.0)).collect();
        println!("kNN after {step} steps: {}", parts.join(", "));
    }

    fn should_stop(&mut self) -> bool {
        self.stop_at.is_some_and(|s| self.done >= s)
    }
}

fn main() -> Result<(), CoreError> {
    let out = std::env::args().nth(1).unwrap_or_else(|| "runs/example-pretrain".into());
    // A narrow Hyper-ResNet-18 on 16 x 16 built-in images: seconds per step on a laptop CPU.
    let mut config = PretrainConfig { steps: 20, batch_size: 32, log_every: 5, checkpoint_every: 10, ..Default::default() };
    config.data.image_size = 16;
    config.encoder.width = 0.125;
    config.optimizer.warmup_steps = 5;
    config.monitor.every = 10;
    config.monitor.bank = 500;
    config.monitor.queries = 200;
    let device = select(DeviceChoice::Cpu)?;
    let run = RunOptions::new(&out, vec![device]);
    let mut printer = Printer { stop_at: std::env::var("AIL_EXAMPLE_STOP_AT").ok().and_then(|s| s.parse().ok()), done: 0 };
    match pretrain(&config, Data::FromConfig, &run, &mut printer) {
        Ok(summary) => {
            println!("done: {} steps in {:.1} s, final loss {:.4}, checkpoint {}", summary.steps, summary.seconds, summary.final_loss, summary.checkpoint.display());
            Ok(())
        }
        Err(CoreError::Interrupted { step, checkpoint }) => {
            println!("stopped after step {step}; checkpoint {} (run the example again to continue)", checkpoint.display());
            Ok(())
        }
        Err(e) => Err(e),
    }
}
