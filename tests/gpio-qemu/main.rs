//! Level-3 GPIO check (spec/appliance.md §6): the daemon's gpiocdev backend and button
//! logic, compiled from the daemon's own files, against a real GPIO character device: QEMU
//! `virt`'s PL061 (label `9030000.pl061`), whose line 3 QEMU pulses high for ~100 ms on
//! `system_powerdown` (the line is free: `gpio_keys` is a module nobody loads). Prints
//! markers the runner (`./run`) looks for on the serial console:
//! `GPIO-READY`, `GPIO-EDGE pressed=…` per raw edge, `GPIO-EVENT <ButtonEvent>`,
//! `GPIO-LED ok`, and exits 0 after the first button event.
#![allow(dead_code)]

/// The one config type `hw` needs, with the daemon's fields.
mod config {
    use std::path::PathBuf;

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ApplianceConfig {
        pub admin_from_anywhere: bool,
        pub setup_code_file: PathBuf,
        pub led: String,
        pub led_active_low: bool,
        pub button: String,
        pub mdns_name: String,
        pub acme_directory: String,
        pub outbound_probe: String,
    }
}

#[path = "../../daemon/src/appliance/button.rs"]
mod button;
#[path = "../../daemon/src/appliance/hw/mod.rs"]
mod hw;

use std::process::ExitCode;
use std::time::Duration;

use hw::{Button, Edge, EdgeFuture, Led};

/// Prints every raw edge, then hands it on.
struct Logged(Box<dyn Button>);

impl Button for Logged {
    fn next_edge(&mut self) -> EdgeFuture<'_> {
        Box::pin(async move {
            let edge: Edge = self.0.next_edge().await?;
            println!("GPIO-EDGE pressed={}", edge.pressed);
            Ok(edge)
        })
    }

    fn is_pressed(&mut self) -> std::io::Result<bool> {
        self.0.is_pressed()
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let chip = args.get(1).map(String::as_str).unwrap_or("9030000.pl061");
    let line = args.get(2).map(String::as_str).unwrap_or("3");
    let led_line: u32 = 0;
    let (path, offset) = match hw::gpio::resolve(chip, line) {
        Ok(x) => x,
        Err(e) => {
            println!("GPIO-FAIL resolve {chip}:{line}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The LED backend on another line of the same chip.
    match hw::gpio::GpioLed::open(&path, led_line, false) {
        Ok(led) => match led.set(true).and_then(|()| led.set(false)) {
            Ok(()) => println!("GPIO-LED ok"),
            Err(e) => println!("GPIO-LED set failed: {e}"),
        },
        Err(e) => println!("GPIO-LED open failed: {e}"),
    }
    // QEMU's line is active high and has no pull: active_low = false.
    let mut b = match hw::gpio::GpioButton::open(&path, offset, false) {
        Ok(b) => b,
        Err(e) => {
            println!("GPIO-FAIL request {}:{offset}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    println!(
        "GPIO-READY chip={} line={offset} pressed={:?}",
        path.display(),
        b.is_pressed().map_err(|e| e.to_string())
    );
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(button::watch(Box::new(Logged(Box::new(b))), tx));
    match tokio::time::timeout(Duration::from_secs(90), rx.recv()).await {
        Ok(Some(event)) => {
            println!("GPIO-EVENT {event:?}");
            ExitCode::SUCCESS
        }
        Ok(None) => {
            println!("GPIO-FAIL the watcher stopped");
            ExitCode::FAILURE
        }
        Err(_) => {
            println!("GPIO-FAIL no button event within 90 s");
            ExitCode::FAILURE
        }
    }
}
