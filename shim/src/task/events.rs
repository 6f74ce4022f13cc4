//! Task events published to containerd (`/tasks/create`, `/tasks/exit`, ...).

use std::time::SystemTime;

use async_trait::async_trait;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::ttrpc::context::Context;
use containerd_shim::publisher::RemotePublisher;

/// Where the task service sends its events.
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Publishes `event` under `topic`; failures are logged, not returned.
    async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>);
}

/// Publishes to containerd over its ttrpc socket, in the shim's namespace.
pub struct ContainerdEvents {
    publisher: RemotePublisher,
    namespace: String,
}

impl ContainerdEvents {
    /// Events for `namespace` through `publisher`.
    pub fn new(publisher: RemotePublisher, namespace: &str) -> Self {
        ContainerdEvents {
            publisher,
            namespace: namespace.to_string(),
        }
    }
}

#[async_trait]
impl EventSink for ContainerdEvents {
    async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        if let Err(e) = self
            .publisher
            .publish(Context::default(), topic, &self.namespace, event)
            .await
        {
            log::error!("publishing {topic}: {e}");
        }
    }
}

/// Converts a time to the protobuf timestamp containerd expects.
pub fn timestamp(at: SystemTime) -> Timestamp {
    Timestamp::from(at)
}
