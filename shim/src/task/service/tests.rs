//! The task service against the recording fake isolation: request checks,
//! refusals and the order of events, with no containerd and no process.

use std::collections::HashMap;
use std::time::Duration;

use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::ttrpc;

use super::*;
use crate::instance::{FakeIsolation, TestBundle};

/// Records every event: its topic, and the status of exits.
#[derive(Default)]
struct RecordedEvents(Mutex<Vec<String>>);

#[async_trait]
impl EventSink for RecordedEvents {
    async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        let line = match event.downcast_ref::<TaskExit>() {
            Some(exit) => format!("{topic} {}", exit.exit_status),
            None => topic.to_string(),
        };
        self.0.lock().unwrap().push(line);
    }
}

struct Harness {
    service: Arc<TaskService>,
    iso: Arc<FakeIsolation>,
    events: Arc<RecordedEvents>,
    exit: Arc<ExitSignal>,
    bundle: TestBundle,
}

fn harness() -> Harness {
    let iso = Arc::new(FakeIsolation::default());
    let events = Arc::new(RecordedEvents::default());
    let exit = Arc::new(ExitSignal::default());
    let service = Arc::new(TaskService::new(
        Launcher::new(iso.clone()),
        events.clone(),
        exit.clone(),
    ));
    Harness {
        service,
        iso,
        events,
        exit,
        bundle: TestBundle::new(),
    }
}

fn ctx() -> TtrpcContext {
    TtrpcContext {
        mh: Default::default(),
        metadata: HashMap::new(),
        timeout_nano: 0,
    }
}

/// The gRPC code and message of a failed request.
fn status<T: std::fmt::Debug>(result: TtrpcResult<T>) -> (ttrpc::Code, String) {
    match result.expect_err("the request should fail") {
        ttrpc::Error::RpcStatus(s) => (s.code(), s.message().to_string()),
        other => panic!("not an rpc status: {other:?}"),
    }
}

impl Harness {
    fn create_request(&self, id: &str) -> api::CreateTaskRequest {
        api::CreateTaskRequest {
            id: id.to_string(),
            bundle: self.bundle.path().to_string_lossy().into_owned(),
            ..Default::default()
        }
    }

    async fn create(&self, id: &str) -> TtrpcResult<api::CreateTaskResponse> {
        self.service.create(&ctx(), self.create_request(id)).await
    }

    async fn start(&self, id: &str) -> TtrpcResult<api::StartResponse> {
        let req = api::StartRequest {
            id: id.to_string(),
            ..Default::default()
        };
        self.service.start(&ctx(), req).await
    }

    async fn delete(&self, id: &str) -> TtrpcResult<api::DeleteResponse> {
        let req = api::DeleteRequest {
            id: id.to_string(),
            ..Default::default()
        };
        self.service.delete(&ctx(), req).await
    }

    async fn state(&self, id: &str) -> TtrpcResult<api::StateResponse> {
        let req = api::StateRequest {
            id: id.to_string(),
            ..Default::default()
        };
        self.service.state(&ctx(), req).await
    }

    async fn shutdown(&self) {
        self.service
            .shutdown(&ctx(), api::ShutdownRequest::default())
            .await
            .unwrap();
    }

    async fn shut_down(&self) -> bool {
        tokio::time::timeout(Duration::from_millis(50), self.exit.wait())
            .await
            .is_ok()
    }

    fn events(&self) -> Vec<String> {
        self.events.0.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn a_second_create_of_one_id_already_exists() {
    let h = harness();
    h.create("c1").await.unwrap();
    let (code, message) = status(h.create("c1").await);
    assert_eq!(code, ttrpc::Code::ALREADY_EXISTS);
    assert!(message.contains("container c1 already exists"), "{message}");
    assert_eq!(h.iso.created(), vec!["c1".to_string()]);
}

#[tokio::test]
async fn requests_during_create_are_refused_as_being_created() {
    let h = harness();
    h.iso.hold_create();
    let creating = tokio::spawn({
        let service = h.service.clone();
        let req = h.create_request("c1");
        async move { service.create(&ctx(), req).await }
    });
    h.iso.wait_create_called().await;
    let (code, message) = status(h.state("c1").await);
    assert_eq!(code, ttrpc::Code::FAILED_PRECONDITION);
    assert!(
        message.contains("container c1 is being created"),
        "{message}"
    );
    let (code, _) = status(h.create("c1").await);
    assert_eq!(code, ttrpc::Code::ALREADY_EXISTS);
    h.iso.release_create();
    creating.await.unwrap().unwrap();
    assert_eq!(
        h.state("c1").await.unwrap().status,
        api::Status::CREATED.into()
    );
}

/// ttrpc drops a request's future when the client's connection closes
/// (containerd killed): a Create dropped while its process is being created
/// still finishes, and the container is there, CREATED, for the containerd
/// that comes back.
#[tokio::test]
async fn a_create_whose_caller_went_away_still_finishes() {
    let h = harness();
    h.iso.hold_create();
    let creating = tokio::spawn({
        let service = h.service.clone();
        let req = h.create_request("c1");
        async move { service.create(&ctx(), req).await }
    });
    h.iso.wait_create_called().await;
    creating.abort();
    assert!(creating.await.is_err(), "the request was not dropped");
    h.iso.release_create();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match h.state("c1").await {
            Ok(state) if state.status == api::Status::CREATED.into() => break,
            other => assert!(
                tokio::time::Instant::now() < deadline,
                "the dropped Create never finished: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.events(), vec!["/tasks/create".to_string()]);
}

#[tokio::test]
async fn a_failed_create_leaves_no_entry() {
    let h = harness();
    h.iso.fail_next_create(Error::InvalidArgument(
        "entrypoint /x is not a module".into(),
    ));
    let (code, message) = status(h.create("c1").await);
    assert_eq!(code, ttrpc::Code::INVALID_ARGUMENT);
    assert_eq!(message, "entrypoint /x is not a module");
    let (code, _) = status(h.state("c1").await);
    assert_eq!(code, ttrpc::Code::NOT_FOUND);
    // The id is free again.
    h.create("c1").await.unwrap();
    assert_eq!(
        h.events(),
        vec![topics::TASK_CREATE_EVENT_TOPIC.to_string()]
    );
}

#[tokio::test]
async fn delete_before_start_kills_the_process_and_reports_137() {
    let h = harness();
    h.create("c1").await.unwrap();
    let deleted = h.delete("c1").await.unwrap();
    assert_eq!(deleted.exit_status, 137);
    assert_eq!(h.iso.process("c1").starts(), 0);
    assert_eq!(h.iso.process("c1").signals(), vec![9]);
    assert_eq!(
        h.events(),
        vec![
            topics::TASK_CREATE_EVENT_TOPIC.to_string(),
            format!("{} 137", topics::TASK_EXIT_EVENT_TOPIC),
            topics::TASK_DELETE_EVENT_TOPIC.to_string(),
        ]
    );
    let (code, _) = status(h.state("c1").await);
    assert_eq!(code, ttrpc::Code::NOT_FOUND);
}

#[tokio::test]
async fn delete_while_running_is_refused() {
    let h = harness();
    h.create("c1").await.unwrap();
    h.start("c1").await.unwrap();
    let (code, message) = status(h.delete("c1").await);
    assert_eq!(code, ttrpc::Code::FAILED_PRECONDITION);
    assert!(message.contains("kill it first"), "{message}");
    assert_eq!(
        h.state("c1").await.unwrap().status,
        api::Status::RUNNING.into()
    );
}

#[tokio::test]
async fn exit_is_published_after_start_even_when_the_module_ends_at_once() {
    let h = harness();
    h.create("c1").await.unwrap();
    // The process exits while Start is still in progress.
    let process = h.iso.process("c1");
    process.hold_start();
    let starting = tokio::spawn({
        let service = h.service.clone();
        async move {
            let req = api::StartRequest {
                id: "c1".into(),
                ..Default::default()
            };
            service.start(&ctx(), req).await
        }
    });
    process.wait_start_called().await;
    process.exit(0);
    // Give the exit publisher every chance to overtake.
    tokio::time::sleep(Duration::from_millis(20)).await;
    process.release_start();
    starting.await.unwrap().unwrap();
    h.delete("c1").await.unwrap();
    assert_eq!(
        h.events(),
        vec![
            topics::TASK_CREATE_EVENT_TOPIC.to_string(),
            topics::TASK_START_EVENT_TOPIC.to_string(),
            format!("{} 0", topics::TASK_EXIT_EVENT_TOPIC),
            topics::TASK_DELETE_EVENT_TOPIC.to_string(),
        ]
    );
}

/// An Exec request of `sh` as exec `exec_id` of container `id`.
fn exec_request(id: &str, exec_id: &str) -> api::ExecProcessRequest {
    use containerd_shim::protos::protobuf::well_known_types::any::Any;
    api::ExecProcessRequest {
        id: id.into(),
        exec_id: exec_id.into(),
        spec: MessageField::some(Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
            value: br#"{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0}}"#.to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn exec_into_wasm_and_tty_are_refused_with_their_reason() {
    let h = harness();
    h.create("c1").await.unwrap();
    // Not running yet: nothing to exec into.
    let (code, message) = status(h.service.exec(&ctx(), exec_request("c1", "e1")).await);
    assert_eq!(code, ttrpc::Code::FAILED_PRECONDITION);
    assert!(message.contains("is not running"), "{message}");
    h.start("c1").await.unwrap();
    let (code, message) = status(h.service.exec(&ctx(), exec_request("c1", "e1")).await);
    assert_eq!(code, ttrpc::Code::UNIMPLEMENTED);
    assert!(
        message.contains("exec into a WebAssembly container is not supported"),
        "{message}"
    );
    let mut no_args = exec_request("c1", "e2");
    no_args.spec.as_mut().unwrap().value = br#"{"cwd":"/","user":{"uid":0,"gid":0}}"#.to_vec();
    let (code, message) = status(h.service.exec(&ctx(), no_args).await);
    assert_eq!(code, ttrpc::Code::INVALID_ARGUMENT);
    assert!(message.contains("no args"), "{message}");
    let start_exec = api::StartRequest {
        id: "c1".into(),
        exec_id: "e1".into(),
        ..Default::default()
    };
    let (code, message) = status(h.service.start(&ctx(), start_exec).await);
    assert_eq!(code, ttrpc::Code::NOT_FOUND);
    assert!(
        message.contains("exec process e1 of container c1 not found"),
        "{message}"
    );

    let mut tty = h.create_request("c2");
    tty.terminal = true;
    let (code, message) = status(h.service.create(&ctx(), tty).await);
    assert_eq!(code, ttrpc::Code::INVALID_ARGUMENT);
    assert!(
        message.contains("terminal (tty) is not supported"),
        "{message}"
    );
}

#[tokio::test]
async fn pause_and_resume_move_the_state_and_publish_their_events() {
    let h = harness();
    h.create("c1").await.unwrap();
    let pause = || api::PauseRequest {
        id: "c1".into(),
        ..Default::default()
    };
    let resume = || api::ResumeRequest {
        id: "c1".into(),
        ..Default::default()
    };
    // A created container is not running: nothing to pause.
    let (code, message) = status(h.service.pause(&ctx(), pause()).await);
    assert_eq!(code, ttrpc::Code::FAILED_PRECONDITION);
    assert!(message.contains("is not running"), "{message}");
    h.start("c1").await.unwrap();

    h.service.pause(&ctx(), pause()).await.unwrap();
    assert_eq!(
        h.state("c1").await.unwrap().status,
        api::Status::PAUSED.into()
    );
    let (code, message) = status(h.service.pause(&ctx(), pause()).await);
    assert_eq!(code, ttrpc::Code::FAILED_PRECONDITION);
    assert!(message.contains("already paused"), "{message}");
    let (code, _) = status(h.delete("c1").await);
    assert_eq!(code, ttrpc::Code::FAILED_PRECONDITION);

    h.service.resume(&ctx(), resume()).await.unwrap();
    assert_eq!(
        h.state("c1").await.unwrap().status,
        api::Status::RUNNING.into()
    );
    let (code, message) = status(h.service.resume(&ctx(), resume()).await);
    assert_eq!(code, ttrpc::Code::FAILED_PRECONDITION);
    assert!(message.contains("is not paused"), "{message}");
    assert_eq!(h.iso.process("c1").freezes(), vec![true, false]);
    assert_eq!(
        h.events(),
        vec![
            "/tasks/create".to_string(),
            "/tasks/start".to_string(),
            "/tasks/paused".to_string(),
            "/tasks/resumed".to_string(),
        ]
    );
}

#[tokio::test]
async fn shutdown_waits_for_the_last_container() {
    let h = harness();
    h.create("c1").await.unwrap();
    h.create("c2").await.unwrap();
    h.delete("c1").await.unwrap();
    h.shutdown().await;
    assert!(!h.shut_down().await, "shut down with c2 still there");
    assert_eq!(
        h.state("c2").await.unwrap().status,
        api::Status::CREATED.into()
    );
    h.delete("c2").await.unwrap();
    h.shutdown().await;
    assert!(h.shut_down().await, "still serving with no container left");
}

#[tokio::test]
async fn kill_and_wait_report_the_signal_status() {
    let h = harness();
    h.create("c1").await.unwrap();
    h.start("c1").await.unwrap();
    let kill = api::KillRequest {
        id: "c1".into(),
        signal: 15,
        ..Default::default()
    };
    h.service.kill(&ctx(), kill.clone()).await.unwrap();
    assert_eq!(h.iso.process("c1").signals(), vec![15]);
    h.iso.process("c1").exit(143);
    let wait = api::WaitRequest {
        id: "c1".into(),
        ..Default::default()
    };
    let waited = h.service.wait(&ctx(), wait).await.unwrap();
    assert_eq!(waited.exit_status, 143);
    let state = h.state("c1").await.unwrap();
    assert_eq!(state.status, api::Status::STOPPED.into());
    assert_eq!(state.exit_status, 143);
    let (code, _) = status(h.service.kill(&ctx(), kill).await);
    assert_eq!(code, ttrpc::Code::NOT_FOUND);
}

#[tokio::test]
async fn sigkill_to_a_paused_container_thaws_it() {
    let h = harness();
    h.create("c1").await.unwrap();
    h.start("c1").await.unwrap();
    let pause = api::PauseRequest {
        id: "c1".into(),
        ..Default::default()
    };
    h.service.pause(&ctx(), pause).await.unwrap();
    let kill = api::KillRequest {
        id: "c1".into(),
        signal: libc::SIGKILL as u32,
        ..Default::default()
    };
    h.service.kill(&ctx(), kill).await.unwrap();
    // A frozen process cannot die: the kill resumed it.
    assert_eq!(h.iso.process("c1").freezes(), vec![true, false]);
    let wait = api::WaitRequest {
        id: "c1".into(),
        ..Default::default()
    };
    assert_eq!(h.service.wait(&ctx(), wait).await.unwrap().exit_status, 137);
    assert_eq!(h.delete("c1").await.unwrap().exit_status, 137);
}

#[tokio::test]
async fn an_exec_runs_beside_its_container_with_the_runc_shims_events() {
    let h = harness();
    h.create("c1").await.unwrap();
    h.start("c1").await.unwrap();
    h.iso.process("c1").allow_exec();
    h.service
        .exec(&ctx(), exec_request("c1", "e1"))
        .await
        .unwrap();
    let (code, _) = status(h.service.exec(&ctx(), exec_request("c1", "e1")).await);
    assert_eq!(code, ttrpc::Code::ALREADY_EXISTS);
    let start = api::StartRequest {
        id: "c1".into(),
        exec_id: "e1".into(),
        ..Default::default()
    };
    let pid = h.service.start(&ctx(), start).await.unwrap().pid;
    let state = api::StateRequest {
        id: "c1".into(),
        exec_id: "e1".into(),
        ..Default::default()
    };
    let exec_state = h.service.state(&ctx(), state.clone()).await.unwrap();
    assert_eq!((exec_state.id.as_str(), exec_state.pid), ("e1", pid));
    assert_eq!(exec_state.status, api::Status::RUNNING.into());
    let pids = api::PidsRequest {
        id: "c1".into(),
        ..Default::default()
    };
    let listed: Vec<u32> = h
        .service
        .pids(&ctx(), pids)
        .await
        .unwrap()
        .processes
        .iter()
        .map(|p| p.pid)
        .collect();
    assert_eq!(listed, vec![h.state("c1").await.unwrap().pid, pid]);

    h.iso.process("c1").exec_process("e1").exit(3);
    let wait = api::WaitRequest {
        id: "c1".into(),
        exec_id: "e1".into(),
        ..Default::default()
    };
    assert_eq!(h.service.wait(&ctx(), wait).await.unwrap().exit_status, 3);
    let delete = api::DeleteRequest {
        id: "c1".into(),
        exec_id: "e1".into(),
        ..Default::default()
    };
    assert_eq!(
        h.service.delete(&ctx(), delete).await.unwrap().exit_status,
        3
    );
    let (code, _) = status(h.service.state(&ctx(), state).await);
    assert_eq!(code, ttrpc::Code::NOT_FOUND);
    // The container runs on; the exec had no /tasks/delete of its own.
    assert_eq!(
        h.state("c1").await.unwrap().status,
        api::Status::RUNNING.into()
    );
    assert_eq!(
        h.events(),
        vec![
            "/tasks/create".to_string(),
            "/tasks/start".to_string(),
            "/tasks/exec-added".to_string(),
            "/tasks/exec-started".to_string(),
            "/tasks/exit 3".to_string(),
        ]
    );
}

/// The idle watch's period in these tests, and a patience no test reaches.
const TICK: Duration = Duration::from_millis(10);
const LONG: Duration = Duration::from_secs(3600);

/// Whether `h`'s shim signals its exit within `limit`.
async fn exits_within(h: &Harness, limit: Duration) -> bool {
    tokio::time::timeout(limit, h.exit.wait()).await.is_ok()
}

/// A shim whose idle watch runs with `patience` for a bundle of its own,
/// returned too: dropping it removes the bundle.
fn watched(patience: Duration) -> (Harness, tempfile::TempDir) {
    let h = harness();
    let started_for = tempfile::tempdir().unwrap();
    h.service
        .watch_idle(started_for.path().to_path_buf(), TICK, patience);
    (h, started_for)
}

/// Asserts that `h`'s shim serves on for `window`; `why` says what keeps it.
async fn assert_serves_on(h: &Harness, window: Duration, why: &str) {
    assert!(!exits_within(h, window).await, "exited {why}");
}

/// Asserts that `h`'s shim signals its exit soon; `why` says why it should.
async fn assert_exits(h: &Harness, limit: Duration, why: &str) {
    assert!(exits_within(h, limit).await, "serving on {why}");
}

#[tokio::test]
async fn an_idle_shim_exits_once_its_bundle_is_gone() {
    let (h, started_for) = watched(LONG);
    let short = Duration::from_millis(100);
    assert_serves_on(&h, short, "while the bundle it was started for exists").await;
    drop(started_for);
    assert_exits(
        &h,
        Duration::from_secs(2),
        "with no container and no bundle",
    )
    .await;
    let (code, message) = status(h.create("late").await);
    assert_eq!(code, ttrpc::Code::FAILED_PRECONDITION, "{message}");
}

#[tokio::test]
async fn a_shim_with_a_container_serves_on_when_its_first_bundle_is_gone() {
    let (h, started_for) = watched(LONG);
    h.create("c1").await.unwrap();
    drop(started_for);
    assert_serves_on(&h, Duration::from_millis(100), "with c1 still there").await;
    h.delete("c1").await.unwrap();
    assert_exits(&h, Duration::from_secs(2), "once c1 was deleted").await;
}

#[tokio::test]
async fn a_shared_shim_whose_claimant_went_away_exits_and_closes_its_socket() {
    let dir = tempfile::tempdir().unwrap();
    let namespace = dir.path().join("default");
    let bundle = namespace.join("c1");
    std::fs::create_dir_all(&bundle).unwrap();
    let socket = dir.path().join("shim.sock");
    let address = format!("unix://{}", socket.display());
    let lock = crate::group::NamespaceLock::take(&namespace).unwrap();
    crate::group::join_or_found(&lock, &bundle, Path::new("/shim"), 4, |_| address.clone())
        .unwrap();
    drop(lock);
    let _listening = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let mut h = harness();
    let group = SharedGroup::of_bundle(&bundle, &address).expect("a shared group");
    h.service = Arc::new((*h.service).clone().with_group(Some(group)));
    h.service.watch_idle(bundle.clone(), TICK, LONG);
    let short = Duration::from_millis(100);
    assert_serves_on(&h, short, "before the Create of c1, which chose it").await;
    assert!(socket.exists(), "the socket was removed while c1 claims it");
    std::fs::remove_dir_all(&bundle).unwrap();
    assert_exits(
        &h,
        Duration::from_secs(2),
        "with no container and no claimant",
    )
    .await;
    assert!(!socket.exists(), "the socket is left for a start to choose");
}

#[tokio::test]
async fn a_shim_that_no_create_reaches_exits_after_its_patience() {
    let patience = Duration::from_secs(1);
    let (h, _kept) = watched(patience);
    h.create("c1").await.unwrap();
    tokio::time::sleep(patience + Duration::from_millis(200)).await;
    assert!(!h.shut_down().await, "exited with c1 there");
    h.delete("c1").await.unwrap();
    let window = Duration::from_millis(400);
    assert_serves_on(&h, window, "before its patience from the last container").await;
    let after = "with no container for longer than its patience";
    assert_exits(&h, Duration::from_secs(3), after).await;
}

#[tokio::test]
async fn the_idle_watch_waits_for_a_request_in_progress() {
    let (h, started_for) = watched(LONG);
    // A Delete of the last container, say, between the map's removal and its
    // response: the shim must not exit under it.
    let in_progress = Busy::enter(&h.service.busy);
    drop(started_for);
    let window = Duration::from_millis(200);
    assert_serves_on(&h, window, "while a request was in progress").await;
    drop(in_progress);
    assert_exits(&h, Duration::from_secs(2), "once the request ended").await;
}
