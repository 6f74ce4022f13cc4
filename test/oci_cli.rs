//! `wasmshim-oci` driven by hand, as a runc caller (containerd's runc shim,
//! conmon) drives it: create → state → start → kill/delete, with the pid
//! file, the OCI state JSON, the JSON log, concurrent invocations on one
//! container, pause/resume, a terminal sent over `--console-socket`, and
//! what bad input leaves behind (nothing).
//!
//! This test binary makes itself a child subreaper, as those callers are, so
//! that the detached worker is reparented to it and its exit status can be
//! read. Needs root and `make build`.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use wasmshim_integration::clients::oci_binary;
use wasmshim_integration::{modules, text};

const CGROUP_PARENT: &str = "wasmshim-oci-cli-test";

/// A runtime root, a log, and bundles in one temp dir.
struct Setup {
    oci: PathBuf,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        // SAFETY: prctl with integer arguments only; it changes no memory.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(rc, 0, "prctl(PR_SET_CHILD_SUBREAPER)");
        Setup {
            oci: oci_binary().expect("wasmshim-oci built"),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("log.json")
    }

    fn oci(&self, args: &[&str]) -> Output {
        let mut command = Command::new(&self.oci);
        command
            .arg("--root")
            .arg(self.root())
            .arg("--log")
            .arg(self.log())
            .args(["--log-format", "json"])
            .args(args)
            .stdin(Stdio::null());
        if args.first() != Some(&"create") {
            return command.output().unwrap();
        }
        // The worker inherits create's stdio (the container's, for a real
        // caller): files, so that no pipe waits for the worker to end.
        let stdout = self.dir.path().join("create.out");
        let stderr = self.dir.path().join("create.err");
        let status = command
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .status()
            .unwrap();
        Output {
            status,
            stdout: std::fs::read(&stdout).unwrap(),
            stderr: std::fs::read(&stderr).unwrap(),
        }
    }

    /// A bundle whose rootfs holds `module` at `/m.wasm`, run as the entrypoint.
    fn bundle(&self, id: &str, module: &[u8]) -> PathBuf {
        let bundle = self.dir.path().join(format!("bundle-{id}"));
        std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
        std::fs::write(bundle.join("rootfs/m.wasm"), module).unwrap();
        let spec = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "args": ["/m.wasm"],
                "env": ["PATH=/bin"],
                "cwd": "/"
            },
            "root": {"path": "rootfs"},
            "hostname": id,
            "linux": {
                "cgroupsPath": format!("/{CGROUP_PARENT}/{id}"),
                "namespaces": [{"type": "mount"}, {"type": "uts"}, {"type": "ipc"}, {"type": "network"}]
            }
        });
        std::fs::write(bundle.join("config.json"), spec.to_string()).unwrap();
        bundle
    }

    fn state(&self, id: &str) -> serde_json::Value {
        let out = self.oci(&["state", id]);
        assert!(out.status.success(), "state {id}: {:?}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Where the worker of the last `create` writes its stdout.
    fn create_stdout(&self) -> PathBuf {
        self.dir.path().join("create.out")
    }

    fn state_dir(&self, id: &str) -> PathBuf {
        self.root().join("wasmshim").join(id)
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in hierarchies.flatten() {
                let _ = std::fs::remove_dir(h.path().join(CGROUP_PARENT));
            }
        }
    }
}

fn looping() -> Vec<u8> {
    wat::parse_str(r#"(module (func (export "_start") (loop $l (br $l))))"#).unwrap()
}

fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .map(|hs| {
            hs.flatten()
                .map(|h| h.path().join(CGROUP_PARENT).join(id))
                .filter(|p| p.exists())
                .collect()
        })
        .unwrap_or_default()
}

fn assert_gone(setup: &Setup, id: &str, pid: u32) {
    assert!(!setup.state_dir(id).exists(), "state of {id} left");
    assert!(
        cgroup_dirs(id).is_empty(),
        "cgroup of {id} left: {:?}",
        cgroup_dirs(id)
    );
    let alive =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z"));
    assert!(!alive, "worker {pid} of {id} still runs");
}

fn reap(pid: u32) -> WaitStatus {
    waitpid(Pid::from_raw(pid as i32), None).unwrap()
}

/// `reap`, but failing after `timeout` instead of waiting forever (a frozen
/// process never ends).
fn reap_within(pid: u32, timeout: Duration) -> WaitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        match waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG)).unwrap() {
            WaitStatus::StillAlive => {
                assert!(Instant::now() < deadline, "worker {pid} did not end");
                std::thread::sleep(Duration::from_millis(20));
            }
            status => return status,
        }
    }
}

/// Waits until `check` holds for the file's content; returns it.
fn wait_for_output(path: &Path, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let content = std::fs::read_to_string(path).unwrap_or_default();
        if check(&content) {
            return content;
        }
        assert!(Instant::now() < deadline, "{what}: {content:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Creates container `id` of `bundle` with a pid file, and returns the worker's pid.
fn create(setup: &Setup, id: &str, bundle: &Path) -> u32 {
    create_with(setup, id, bundle, &[])
}

/// [`create`] with `extra` flags of runc's `create`.
fn create_with(setup: &Setup, id: &str, bundle: &Path, extra: &[&str]) -> u32 {
    let pid_file = bundle.join("init.pid");
    let mut args = vec![
        "create",
        "--bundle",
        bundle.to_str().unwrap(),
        "--pid-file",
        pid_file.to_str().unwrap(),
    ];
    args.extend(extra);
    args.push(id);
    let out = setup.oci(&args);
    assert!(out.status.success(), "create {id}: {:?}", text(&out));
    std::fs::read_to_string(&pid_file).unwrap().parse().unwrap()
}

#[test]
fn lifecycle_as_a_runc_caller_sees_it() {
    let setup = Setup::new();
    let id = "life";
    let bundle = setup.bundle(id, &looping());
    let pid = create_with(&setup, id, &bundle, &["--no-new-keyring"]);

    let state = setup.state(id);
    assert_eq!(state["status"], "created");
    assert_eq!(state["pid"], pid);
    assert_eq!(state["id"], id);
    assert_eq!(state["bundle"], bundle.to_str().unwrap());
    let ps = setup.oci(&["ps", "--format", "json", id]);
    assert_eq!(
        serde_json::from_slice::<Vec<u32>>(&ps.stdout).unwrap(),
        vec![pid]
    );

    let again = setup.oci(&["create", "--bundle", bundle.to_str().unwrap(), id]);
    assert!(!again.status.success());
    assert!(
        text(&again).1.contains("exists already"),
        "{:?}",
        text(&again)
    );

    let out = setup.oci(&["start", id]);
    assert!(out.status.success(), "start: {:?}", text(&out));
    assert_eq!(setup.state(id)["status"], "running");
    let out = setup.oci(&["start", id]);
    assert!(text(&out).1.contains("already running"), "{:?}", text(&out));
    let out = setup.oci(&["delete", id]);
    assert!(
        !out.status.success(),
        "delete of a running container without --force"
    );
    assert!(text(&out).1.contains("not stopped"), "{:?}", text(&out));
    let out = setup.oci(&["exec", id, "/m.wasm"]);
    assert!(
        text(&out).1.contains("not supported for WebAssembly"),
        "{:?}",
        text(&out)
    );

    let out = setup.oci(&["kill", id, "TERM"]);
    assert!(out.status.success(), "kill: {:?}", text(&out));
    assert_eq!(
        reap(pid),
        WaitStatus::Signaled(Pid::from_raw(pid as i32), nix::sys::signal::SIGTERM, false)
    );
    assert_eq!(setup.state(id)["status"], "stopped");
    let out = setup.oci(&["kill", id, "KILL"]);
    assert!(text(&out).1.contains("not running"), "{:?}", text(&out));
    let out = setup.oci(&["delete", id]);
    assert!(out.status.success(), "delete: {:?}", text(&out));
    assert_gone(&setup, id, pid);
}

#[test]
fn concurrent_deletes_and_kills_leave_one_clean_end() {
    let setup = Setup::new();
    let id = "race";
    let bundle = setup.bundle(id, &looping());
    let pid = create(&setup, id, &bundle);
    assert!(setup.oci(&["start", id]).status.success());

    let outputs: Vec<Output> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let setup = &setup;
                s.spawn(move || {
                    if i % 2 == 0 {
                        setup.oci(&["delete", "--force", id])
                    } else {
                        setup.oci(&["kill", id, "KILL"])
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Every delete ends well (the late ones find nothing to delete, as with
    // runc); a kill either lands or finds the container gone.
    for (i, out) in outputs.iter().enumerate() {
        if i % 2 == 0 {
            assert!(out.status.success(), "delete {i}: {:?}", text(out));
        }
    }
    assert!(matches!(
        reap(pid),
        WaitStatus::Signaled(_, nix::sys::signal::SIGKILL, _)
    ));
    assert_gone(&setup, id, pid);
}

#[test]
fn deleting_a_created_container_kills_it() {
    let setup = Setup::new();
    let id = "unstarted";
    let bundle = setup.bundle(id, &looping());
    let pid = create(&setup, id, &bundle);
    let out = setup.oci(&["delete", id]);
    assert!(out.status.success(), "delete: {:?}", text(&out));
    assert!(matches!(
        reap(pid),
        WaitStatus::Signaled(_, nix::sys::signal::SIGKILL, _)
    ));
    assert_gone(&setup, id, pid);
}

#[test]
fn bad_module_is_named_in_stderr_and_json_log_and_leaves_nothing() {
    let setup = Setup::new();
    let id = "corrupt";
    let bundle = setup.bundle(id, b"\0asm\x01\0\0\0\x01\xffgarbage");
    let out = setup.oci(&["create", "--bundle", bundle.to_str().unwrap(), id]);
    assert!(!out.status.success());
    let message = "/m.wasm is not a valid WebAssembly module";
    assert!(text(&out).1.contains(message), "{:?}", text(&out));
    // containerd's runc shim reports the last "error" record of the JSON log.
    let log = std::fs::read_to_string(setup.log()).unwrap();
    let last_error = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .rfind(|v| v["level"] == "error")
        .expect("an error record in the log");
    assert!(
        last_error["msg"].as_str().unwrap().contains(message),
        "{log}"
    );
    assert!(!setup.state_dir(id).exists());
    assert!(cgroup_dirs(id).is_empty(), "{:?}", cgroup_dirs(id));
    assert!(
        wasmshim_integration::processes_mentioning(&format!("__wasmshim_worker {id}")).is_empty()
    );
}

#[test]
fn ids_that_leave_the_root_are_refused() {
    let setup = Setup::new();
    let bundle = setup.bundle("x", &looping());
    let out = setup.oci(&["create", "--bundle", bundle.to_str().unwrap(), "../escape"]);
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("invalid container id"),
        "{:?}",
        text(&out)
    );
    assert!(!setup.dir.path().join("escape").exists());
}

/// The lines `tick N` the ticker module has printed so far.
fn ticks(output: &str) -> usize {
    output.lines().filter(|l| l.starts_with("tick ")).count()
}

#[test]
fn pause_stops_the_module_and_resume_lets_it_go_on() {
    let setup = Setup::new();
    let modules = setup.dir.path().join("modules");
    let ticker = std::fs::read(modules::build_c("ticker", &modules).unwrap()).unwrap();
    let id = "paused";
    let bundle = setup.bundle(id, &ticker);
    let pid = create(&setup, id, &bundle);
    let out = setup.oci(&["resume", id]);
    assert!(text(&out).1.contains("is not paused"), "{:?}", text(&out));
    assert!(setup.oci(&["start", id]).status.success());
    let stdout = setup.create_stdout();
    wait_for_output(&stdout, "the ticker never ticked", |o| ticks(o) >= 2);

    let out = setup.oci(&["pause", id]);
    assert!(out.status.success(), "pause: {:?}", text(&out));
    assert_eq!(setup.state(id)["status"], "paused");
    assert_eq!(setup.state(id)["pid"], pid);
    let out = setup.oci(&["pause", id]);
    assert!(text(&out).1.contains("already paused"), "{:?}", text(&out));
    let out = setup.oci(&["delete", id]);
    assert!(
        text(&out).1.contains("not stopped: paused"),
        "delete of a paused container without --force: {:?}",
        text(&out)
    );
    // The module ticks every 100 ms: a second of silence means it is frozen.
    let before = ticks(&std::fs::read_to_string(&stdout).unwrap());
    std::thread::sleep(Duration::from_secs(1));
    let after = ticks(&std::fs::read_to_string(&stdout).unwrap());
    assert_eq!(before, after, "the module went on ticking while paused");

    let out = setup.oci(&["resume", id]);
    assert!(out.status.success(), "resume: {:?}", text(&out));
    assert_eq!(setup.state(id)["status"], "running");
    wait_for_output(&stdout, "no tick after resume", |o| ticks(o) >= after + 3);

    // SIGKILL reaches a paused container: the kill thaws it (runc does the same).
    assert!(setup.oci(&["pause", id]).status.success());
    let out = setup.oci(&["kill", id, "KILL"]);
    assert!(out.status.success(), "kill: {:?}", text(&out));
    assert_eq!(
        reap_within(pid, Duration::from_secs(10)),
        WaitStatus::Signaled(Pid::from_raw(pid as i32), nix::sys::signal::SIGKILL, false)
    );
    assert_eq!(setup.state(id)["status"], "stopped");
    let out = setup.oci(&["pause", id]);
    assert!(text(&out).1.contains("not running"), "{:?}", text(&out));
    assert!(setup.oci(&["delete", id]).status.success());
    assert_gone(&setup, id, pid);
}

#[test]
fn delete_force_of_a_paused_container_removes_it() {
    let setup = Setup::new();
    let id = "paused-force";
    let bundle = setup.bundle(id, &looping());
    let pid = create(&setup, id, &bundle);
    assert!(setup.oci(&["start", id]).status.success());
    let out = setup.oci(&["pause", id]);
    assert!(out.status.success(), "pause: {:?}", text(&out));
    assert_eq!(setup.state(id)["status"], "paused");
    let out = setup.oci(&["delete", "--force", id]);
    assert!(out.status.success(), "delete --force: {:?}", text(&out));
    assert!(matches!(
        reap_within(pid, Duration::from_secs(10)),
        WaitStatus::Signaled(_, nix::sys::signal::SIGKILL, _)
    ));
    assert_gone(&setup, id, pid);
}

/// Makes the bundle's process ask for a terminal of `rows` x `cols`, with `args`.
fn with_terminal(bundle: &Path, args: &[&str], rows: u16, cols: u16) {
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    spec["process"]["terminal"] = true.into();
    spec["process"]["args"] = serde_json::json!(args);
    spec["process"]["consoleSize"] = serde_json::json!({"height": rows, "width": cols});
    std::fs::write(&path, spec.to_string()).unwrap();
}

/// Accepts one connection on `listener` and receives the descriptor sent
/// with SCM_RIGHTS, and the message's payload.
fn receive_master(listener: &UnixListener) -> (OwnedFd, Vec<u8>) {
    let (stream, _) = listener.accept().unwrap();
    let mut payload = [0u8; 256];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [std::io::IoSliceMut::new(&mut payload)];
    let msg = recvmsg::<UnixAddr>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .unwrap();
    let fd = msg
        .cmsgs()
        .unwrap()
        .find_map(|c| match c {
            ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
            _ => None,
        })
        .expect("no descriptor came over the console socket");
    let len = msg.bytes;
    // SAFETY: the descriptor was just received over the socket; nothing else owns it.
    let master = unsafe { OwnedFd::from_raw_fd(fd) };
    (master, payload[..len].to_vec())
}

#[test]
fn terminal_master_goes_to_the_console_socket_and_carries_the_output() {
    let setup = Setup::new();
    let modules = setup.dir.path().join("modules");
    let exit = std::fs::read(modules::build_c("exit", &modules).unwrap()).unwrap();
    let id = "tty";
    let bundle = setup.bundle(id, &exit);
    with_terminal(&bundle, &["/m.wasm", "3"], 33, 101);
    let socket = setup.dir.path().join("console.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let pid = create_with(
        &setup,
        id,
        &bundle,
        &["--console-socket", socket.to_str().unwrap()],
    );
    let (master, payload) = receive_master(&listener);
    assert_eq!(payload, b"/dev/ptmx", "runc's payload");
    // process.consoleSize is the terminal's size.
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into `size`, which outlives the call.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    assert_eq!(rc, 0, "TIOCGWINSZ on the received master");
    assert_eq!((size.ws_row, size.ws_col), (33, 101));
    assert_eq!(setup.state(id)["status"], "created");
    // The worker leads its own session, with the pty as controlling terminal.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .collect();
    assert_eq!(fields[3], pid.to_string(), "session of the worker: {stat}");
    assert_ne!(
        fields[4], "0",
        "the worker has no controlling terminal: {stat}"
    );

    let out = setup.oci(&["start", id]);
    assert!(out.status.success(), "start: {:?}", text(&out));
    // The module's output comes through the pty (its \n turned into \r\n);
    // once the worker has ended, reading the master fails with EIO.
    let mut output = Vec::new();
    let _ = std::fs::File::from(master).read_to_end(&mut output);
    let output = String::from_utf8_lossy(&output);
    assert!(
        output.contains("exiting with 3\r\n"),
        "terminal output {output:?}"
    );
    assert!(
        std::fs::read(setup.create_stdout()).unwrap().is_empty(),
        "the output went to create's stdout, not the terminal"
    );
    assert_eq!(
        reap_within(pid, Duration::from_secs(10)),
        WaitStatus::Exited(Pid::from_raw(pid as i32), 3)
    );
    assert!(setup.oci(&["delete", id]).status.success());
    assert_gone(&setup, id, pid);
}

#[test]
fn terminal_without_a_reachable_console_socket_leaves_nothing() {
    let setup = Setup::new();
    let id = "tty-nosocket";
    let bundle = setup.bundle(id, &looping());
    with_terminal(&bundle, &["/m.wasm"], 24, 80);
    let missing = setup.dir.path().join("no-such.sock");
    let out = setup.oci(&[
        "create",
        "--bundle",
        bundle.to_str().unwrap(),
        "--console-socket",
        missing.to_str().unwrap(),
        id,
    ]);
    assert!(
        !out.status.success(),
        "create with a missing console socket"
    );
    assert!(
        text(&out).1.contains(missing.to_str().unwrap()),
        "the socket's path is not named: {:?}",
        text(&out)
    );
    let out = setup.oci(&["create", "--bundle", bundle.to_str().unwrap(), id]);
    assert!(
        text(&out).1.contains("no --console-socket"),
        "a terminal without a console socket: {:?}",
        text(&out)
    );
    assert!(!setup.state_dir(id).exists(), "state of {id} left");
    assert!(cgroup_dirs(id).is_empty(), "{:?}", cgroup_dirs(id));
    assert!(
        wasmshim_integration::processes_mentioning(&format!("__wasmshim_worker {id}")).is_empty()
    );
}
