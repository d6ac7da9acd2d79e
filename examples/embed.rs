//! Embedding moongate in a Rust program: a config from a string, served on
//! background threads, stopped gracefully.
//!
//! Run with `cargo run --example embed`, then `curl -i 127.0.0.1:8088/`.

use std::time::Duration;

const CONFIG: &str = r#"
[server]
listen = ["127.0.0.1:8088"]
workers = 1
access_log = "off"

[[route]]
path = "/"
root = "examples/site"
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let running = moongate::Server::from_toml(CONFIG).start()?;
    for l in running.listeners() {
        println!("embedded moongate listening on {}://{}", l.scheme, l.addr);
    }
    // A real program would run until told to stop; this example serves for
    // a while (or until interrupted) and then stops gracefully.
    let secs = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    std::thread::sleep(Duration::from_secs(secs));
    running.stop()?;
    println!("stopped");
    Ok(())
}
