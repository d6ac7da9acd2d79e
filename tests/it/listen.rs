//! Two processes must not serve one address: SO_REUSEPORT would let a
//! second `moongate run` bind beside the first and take a random share of
//! its traffic and admin calls, so start-up refuses an address another
//! process listens on.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Moongate, Origin, client};

/// Runs `moongate run` on `conf`, expecting it to exit on its own; returns
/// the exit code and standard error. Killed (by its handle) after 20 s.
fn run_expecting_exit(conf: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("00.toml"), conf).expect("write conf");
    let mut child = Command::new(env!("CARGO_BIN_EXE_moongate"))
        .arg("run")
        .arg("-c")
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn moongate");
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the second moongate kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stderr);
    }
    (code, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_on_the_same_addresses_refuses_to_start() {
    let origin = Origin::named("first").await;
    let conf = |listen: String, admin: String| {
        format!(
            "[server]\nlisten = [\"{listen}\"]\nworkers = 2\naccess_log = \"off\"\n\
             [admin]\nlisten = \"{admin}\"\n\
             [upstream.a]\nservers = [{{ addr = \"{}\" }}]\n[[route]]\npath = \"/\"\nupstream = \"a\"\n",
            origin.addr
        )
    };
    let first = Moongate::start(&conf("127.0.0.1:0".into(), "127.0.0.1:0".into()));
    let (http, admin) = (first.http[0], first.admin.expect("admin"));

    let (code, stderr) = tokio::task::block_in_place(|| {
        run_expecting_exit(&conf(http.to_string(), "127.0.0.1:0".into()))
    });
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "address in use: another process listens on {http}"
        )),
        "{stderr}"
    );

    let (code, stderr) = tokio::task::block_in_place(|| {
        run_expecting_exit(&conf("127.0.0.1:0".into(), admin.to_string()))
    });
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "address in use: another process listens on {admin}"
        )),
        "{stderr}"
    );

    // The first instance still has every request and the admin API.
    for _ in 0..20 {
        let resp = client().get(first.url("/")).send().await.expect("GET");
        assert_eq!(resp.text().await.expect("body"), "first");
    }
    assert_eq!(first.status().await["generation"], 1);
}
