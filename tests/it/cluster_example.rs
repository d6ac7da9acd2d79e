//! examples/cluster/cluster.py in its short mode (`--quick`), as CI runs
//! it: a real 3-master Redis Cluster, three moongate nodes (this build's
//! binary) sharing one conf.d file, behind Debian's haproxy. Checks the
//! figures it prints: the 100 r/s `scope = "redis"` limit held within
//! ±5 % across the nodes under 3x over-demand, with every node serving,
//! and every purge on node A reaching nodes B and C. The script stops what
//! it started by PID; on a hang it is sent SIGTERM (it cleans up), then
//! killed (its children die with it: PR_SET_PDEATHSIG).

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::require_installed;

/// Well under the two minutes CI allows it; it takes ~20 s.
const BOUND: Duration = Duration::from_secs(100);

#[test]
fn the_cluster_example_holds_the_limit_and_fans_purges_out() {
    require_installed("redis-server", "redis-server");
    require_installed("redis-cli", "redis-tools");
    require_installed("python3", "python3");
    let haproxy = Command::new("haproxy")
        .arg("-v")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        haproxy,
        "haproxy is not installed: run ./test.sh (it installs Debian's haproxy)"
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cluster/cluster.py");
    let mut child = Command::new("python3")
        .arg(&script)
        // A debug build beside the rest of the suite on a small machine:
        // a take may wait well past the example's 100 ms, which is not
        // what this test is about.
        .args(["--quick", "--require-haproxy", "--redis-timeout", "2s"])
        .arg("--moongate")
        .arg(env!("CARGO_BIN_EXE_moongate"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run examples/cluster/cluster.py");
    let read = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    };
    let out = read(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = read(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if started.elapsed() > BOUND {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            std::thread::sleep(Duration::from_secs(5));
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (stdout, stderr) = (out.join().expect("stdout"), err.join().expect("stderr"));
    let status = status.unwrap_or_else(|| {
        panic!("the script ran over {BOUND:?}:\n{stdout}\n{stderr}");
    });
    assert!(
        status.success(),
        "the script failed ({status}):\n{stdout}\n{stderr}"
    );

    let result: Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .map(|j| serde_json::from_str(j).expect("RESULT is JSON"))
        .unwrap_or_else(|| panic!("no RESULT line:\n{stdout}\n{stderr}"));
    assert_eq!(result["front"], "haproxy", "{result}");

    let limit = &result["limit"];
    let (allowed, expected) = (
        limit["allowed"].as_f64().expect("allowed"),
        limit["expected"].as_f64().expect("expected"),
    );
    assert!(
        (allowed - expected).abs() <= expected * 0.05,
        "the three nodes allowed {allowed}, one bucket is {expected} ±5 %: {result}"
    );
    assert!(
        limit["limited"].as_u64().unwrap_or(0) as f64 > allowed / 2.0,
        "over-demand (3x offered, at least 1.5x sent): many requests limited: {result}"
    );
    assert_eq!(limit["failed"], 0, "{result}");
    assert_eq!(
        limit["fallbacks"], 0,
        "answered by Redis all along: {result}"
    );
    let by_node: Vec<u64> = limit["allowed_by_node"]
        .as_array()
        .expect("allowed_by_node")
        .iter()
        .map(|v| v.as_u64().unwrap_or(0))
        .collect();
    assert_eq!(by_node.len(), 3, "{result}");
    assert!(
        by_node.iter().all(|&n| n > 0),
        "the front spread the load over every node: {result}"
    );
    assert_eq!(by_node.iter().sum::<u64>() as f64, allowed, "{result}");

    let purge = &result["purge"];
    let purges = purge["purges"].as_u64().expect("purges");
    assert!(purges >= 5, "{result}");
    assert_eq!(purge["missed"], 0, "{result}");
    assert_eq!(purge["reached"].as_u64(), Some(2 * purges), "{result}");
    assert_eq!(
        purge["fanout"]["published"].as_u64(),
        Some(purges),
        "{result}"
    );
}
