//! Task events published to containerd (`/tasks/create`, `/tasks/exit`, ...).

use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use containerd_shim::protos::api::ForwardRequest;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::shim::event::Envelope;
use containerd_shim::protos::shim_async::{Client, EventsClient};
use containerd_shim::protos::ttrpc::context::Context;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::util::convert_to_any;
use tokio::sync::Mutex;

/// Where the task service sends its events.
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Publishes `event` under `topic`; failures are logged, not returned.
    async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>);
}

/// How long an event waits for containerd to come back before it is dropped.
const PUBLISH_PATIENCE: Duration = Duration::from_secs(300);

/// The longest one forward call may take before the connection is dropped.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// Publishes to containerd over its ttrpc socket, in the shim's namespace.
///
/// Each event is forwarded before `publish` returns, in order, over one
/// connection that is made again whenever a forward fails: after containerd
/// restarts, the first event goes out at once over a new connection. (The
/// `containerd-shim` crate's queue retried a failed event only a second or
/// more later, after the shim had often shut down, so a shim deleted just
/// after a restart lost its `/tasks/delete`, and exits that happened while
/// containerd was down came after the task's deletion.)
pub struct ContainerdEvents {
    /// containerd's ttrpc socket, `unix://…`.
    address: String,
    namespace: String,
    client: Mutex<Option<EventsClient>>,
}

impl ContainerdEvents {
    /// Events for `namespace` to the containerd `publisher` was made for
    /// (only its address is used; its queue stays idle).
    pub fn new(publisher: RemotePublisher, namespace: &str) -> Self {
        let address = if publisher.address.contains("://") {
            publisher.address.clone()
        } else {
            format!("unix://{}", publisher.address)
        };
        ContainerdEvents {
            address,
            namespace: namespace.to_string(),
            client: Mutex::new(None),
        }
    }

    /// One attempt over the current connection, made first if there is none.
    /// Returns whether the connection was new, and the error.
    async fn forward(
        &self,
        client: &mut Option<EventsClient>,
        request: &ForwardRequest,
    ) -> Result<(), (bool, String)> {
        let fresh = client.is_none();
        if fresh {
            let connected = Client::connect(&self.address)
                .await
                .map_err(|e| (true, format!("connecting to {}: {e}", self.address)))?;
            *client = Some(EventsClient::new(connected));
        }
        let events = client.as_ref().expect("connected above");
        let sent =
            tokio::time::timeout(FORWARD_TIMEOUT, events.forward(Context::default(), request))
                .await;
        match sent {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                *client = None;
                Err((fresh, e.to_string()))
            }
            Err(_) => {
                *client = None;
                Err((fresh, format!("no answer within {FORWARD_TIMEOUT:?}")))
            }
        }
    }
}

#[async_trait]
impl EventSink for ContainerdEvents {
    async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        let mut envelope = Envelope::new();
        envelope.set_topic(topic.to_string());
        envelope.set_namespace(self.namespace.clone());
        envelope.set_timestamp(timestamp(SystemTime::now()));
        match convert_to_any(event) {
            Ok(any) => envelope.set_event(any),
            Err(e) => {
                log::error!("publishing {topic}: {e}");
                return;
            }
        }
        let mut request = ForwardRequest::new();
        request.set_envelope(envelope);
        // One publisher at a time: events reach containerd in the order sent.
        let mut client = self.client.lock().await;
        let deadline = Instant::now() + PUBLISH_PATIENCE;
        let mut delay = Duration::from_millis(50);
        let mut warned = false;
        loop {
            let (fresh, error) = match self.forward(&mut client, &request).await {
                Ok(()) => return,
                Err(e) => e,
            };
            // A connection to a containerd that restarted fails once: make a new one at once.
            if !fresh {
                continue;
            }
            if Instant::now() > deadline {
                log::error!("publishing {topic}: {error}; giving up after {PUBLISH_PATIENCE:?}");
                return;
            }
            if !warned {
                log::warn!("publishing {topic}: {error}; retrying until containerd answers");
                warned = true;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }
}

/// Converts a time to the protobuf timestamp containerd expects.
pub fn timestamp(at: SystemTime) -> Timestamp {
    Timestamp::from(at)
}
