//! Runs one ignored test of the current test binary in a child process, for
//! the tests that must change the whole process (a seccomp filter, a
//! resource limit, a signal handler) or that need a fresh `exec`.

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// What a child test process did.
#[derive(Debug)]
pub struct Output {
    /// How it ended.
    pub status: ExitStatus,
    /// Everything it printed to stdout.
    pub stdout: String,
    /// Everything it printed to stderr.
    pub stderr: String,
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\n--- stdout\n{}\n--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs the ignored test `test` of this test binary in a child process with
/// `envs` set (its fds without close-on-exec are inherited), and returns
/// what it did; kills it and fails if it does not end within
/// [`TEST_LIMIT`](super::TEST_LIMIT).
#[track_caller]
pub fn run_test(test: &str, envs: &[(&str, String)]) -> Output {
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .args([
            "--ignored",
            "--exact",
            test,
            "--nocapture",
            "--test-threads=1",
        ])
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child test process");
    // Read both pipes on threads, so a chatty child never blocks on a full one.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).map(|_| text)
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if start.elapsed() > super::TEST_LIMIT {
            child.kill().expect("kill the hung child");
            child.wait().expect("reap the killed child");
            panic!(
                "child test {test} did not finish within {:?}",
                super::TEST_LIMIT
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: out.join().expect("stdout reader").expect("child stdout"),
        stderr: err.join().expect("stderr reader").expect("child stderr"),
    }
}
