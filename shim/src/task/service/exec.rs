//! Exec (`ctr task exec`) for the task service: one more process in a
//! running container, kept as an entry of that container until its Delete.

use containerd_shim::api;
use containerd_shim::protos::events::task::TaskExecAdded;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::topics;

use super::{Entry, TaskService};
use crate::error::{Error, Result};
use crate::instance::StdioPaths;
use crate::task::events::timestamp;

impl TaskService {
    /// Exec: prepares the process (it runs at Start) and publishes `/tasks/exec-added`.
    pub(super) async fn exec_task(&self, req: &api::ExecProcessRequest) -> Result<()> {
        let (id, exec_id) = (req.id.as_str(), req.exec_id.as_str());
        if exec_id.is_empty() {
            return Err(Error::InvalidArgument("exec id is empty".into()));
        }
        let parent = self.entry(id, "")?;
        if parent.execs().contains_key(exec_id) {
            return Err(Error::AlreadyExists(format!(
                "exec {exec_id} of container {id} already exists"
            )));
        }
        let spec = req.spec.as_ref().map(|s| s.value.as_slice()).unwrap_or(&[]);
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
        };
        let exec = parent
            .container
            .exec(exec_id, spec, stdio, req.terminal)
            .await?;
        let added = {
            let mut execs = parent.execs();
            if execs.contains_key(exec_id) {
                None
            } else {
                let (entry, added_event) = Entry::watched(&self.events, id, exec.clone());
                execs.insert(exec_id.to_string(), entry);
                Some(added_event)
            }
        };
        let Some(added_event) = added else {
            // Lost a race with an Exec of the same id: this one never runs.
            let _ = exec.kill(libc::SIGKILL as u32).await;
            return Err(Error::AlreadyExists(format!(
                "exec {exec_id} of container {id} already exists"
            )));
        };
        self.events
            .publish(
                topics::TASK_EXEC_ADDED_EVENT_TOPIC,
                Box::new(TaskExecAdded {
                    container_id: id.to_string(),
                    exec_id: exec_id.to_string(),
                    ..Default::default()
                }),
            )
            .await;
        drop(added_event);
        Ok(())
    }

    /// Delete of an exec: ends it if it never started, waits for its exit
    /// event and forgets it. The runc shim publishes no `/tasks/delete` for it.
    pub(super) async fn delete_exec(&self, id: &str, exec_id: &str) -> Result<api::DeleteResponse> {
        let entry = self.entry(id, exec_id)?;
        let exit = entry.container.delete().await?;
        entry.exit_published().await;
        if let Ok(parent) = self.entry(id, "") {
            parent.execs().remove(exec_id);
        }
        Ok(api::DeleteResponse {
            pid: entry.container.pid(),
            exit_status: exit.status,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        })
    }
}
