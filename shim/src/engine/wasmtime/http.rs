//! HTTP functions on wasmtime: a `wasi:http/proxy` component (one that
//! exports `wasi:http/incoming-handler`) is served on the address its
//! container declares, one fresh instance per request, as `wasmtime serve`
//! and runwasi's wasmtime shim serve it.
//!
//! - **Address**: `WASMTIME_HTTP_PROXY_SOCKET_ADDR` in the container's
//!   environment (runwasi's variable), `0.0.0.0:8080` by default, in the
//!   container's network namespace; `WASMTIME_HTTP_PROXY_BACKLOG` sets the
//!   listen backlog (100). Neither is passed on to the component. The socket
//!   is bound at Create, so a bad or busy address fails `ctr run` by name.
//! - **Requests**: HTTP/1.1 (hyper), served on a multi-threaded tokio
//!   runtime; each request gets its own store and instance from wasmtime's
//!   pooling allocator, so requests share nothing and run in parallel. At
//!   most [`MAX_CONCURRENT_REQUESTS`] instances live at once; more requests
//!   wait for one to end.
//! - **Stop**: SIGTERM stops accepting (new connections are refused), lets
//!   every accepted connection finish its request, and exits 0. SIGKILL
//!   stops it at once, as any container.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use http_body_util::BodyExt;
use hyper::server::conn::http1;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::wasi_builder;
use crate::engine::{Outcome, PreparedModule, RunSpec};

/// Environment variable naming the address to serve on (runwasi's name).
pub const ADDR_ENV: &str = "WASMTIME_HTTP_PROXY_SOCKET_ADDR";
/// Environment variable setting the listen backlog (runwasi's name).
pub const BACKLOG_ENV: &str = "WASMTIME_HTTP_PROXY_BACKLOG";
/// The address served when [`ADDR_ENV`] is not set.
pub const DEFAULT_ADDR: &str = "0.0.0.0:8080";
/// The listen backlog when [`BACKLOG_ENV`] is not set.
pub const DEFAULT_BACKLOG: i32 = 100;
/// Instances alive at once (the pooling allocator's size); further requests
/// wait for a free one.
pub const MAX_CONCURRENT_REQUESTS: u32 = 100;
/// How long, after SIGTERM, a connection accepted before it but still silent
/// may take to send its request.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// Where and how to listen, from the container's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenConfig {
    /// The address to bind.
    pub addr: SocketAddr,
    /// The listen backlog.
    pub backlog: i32,
}

impl ListenConfig {
    /// Reads [`ADDR_ENV`] and [`BACKLOG_ENV`] from `spec`; a value that does
    /// not parse is an error naming the variable.
    pub fn from_spec(spec: &RunSpec) -> anyhow::Result<ListenConfig> {
        let addr = spec.env_var(ADDR_ENV).unwrap_or(DEFAULT_ADDR);
        let addr = addr.parse().map_err(|_| {
            anyhow::anyhow!("{ADDR_ENV}={addr:?} is not an address such as 0.0.0.0:8080")
        })?;
        let backlog = match spec.env_var(BACKLOG_ENV) {
            None => DEFAULT_BACKLOG,
            Some(value) => match value.parse::<i32>() {
                Ok(n) if n > 0 => n,
                _ => bail!("{BACKLOG_ENV}={value:?} is not a positive number"),
            },
        };
        Ok(ListenConfig { addr, backlog })
    }

    /// Binds and listens, in the calling thread's network namespace.
    fn listen(&self) -> anyhow::Result<std::net::TcpListener> {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::for_address(self.addr), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.bind(&self.addr.into())?;
        socket.listen(self.backlog)?;
        socket.set_nonblocking(true)?;
        Ok(socket.into())
    }
}

/// The engine HTTP functions run on: the shim's configuration with a pool of
/// [`MAX_CONCURRENT_REQUESTS`] instances, so that instantiating is taking a
/// slot, not mapping memory.
fn pooling_engine() -> anyhow::Result<wasmtime::Engine> {
    let n = MAX_CONCURRENT_REQUESTS;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(n)
        // A component holds a few core instances (its module, an adapter,
        // shims), each with at most a memory or two and a few tables.
        .total_core_instances(8 * n)
        .total_memories(4 * n)
        .total_tables(8 * n)
        .total_stacks(n);
    let mut config = super::engine_config();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    super::new_engine(&config)
}

/// What one request's store holds.
struct RequestState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
}

impl WasiView for RequestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for RequestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            // wasmtime's own: outgoing requests over HTTP and HTTPS.
            hooks: wasmtime_wasi_http::default_hooks(),
        }
    }
}

/// Moves `component` (compiled by `engine`) onto the pooling engine, links
/// it with WASI preview 2 and `wasi:http`, and binds its address; fails,
/// naming the component, when it cannot be served.
pub(super) fn prepare(
    component: &Component,
    spec: &RunSpec,
) -> anyhow::Result<Box<dyn PreparedModule>> {
    let name = &spec.module_name;
    if spec.entry != "_start" {
        bail!(
            "{name} is an HTTP component: it is called through its \
             wasi:http/incoming-handler export, so no entry function ('#{}') can be named",
            spec.entry
        );
    }
    check_handler(component)
        .with_context(|| format!("{name} cannot be served as a wasi:http/proxy"))?;
    let listen = ListenConfig::from_spec(spec)?;
    let engine = pooling_engine()?;
    let code = component.serialize()?;
    // SAFETY: `code` was serialised just now, in this process, by this
    // wasmtime, from an engine of the same configuration (the pool changes
    // how instances are allocated, not the compiled code).
    let component = unsafe { Component::deserialize(&engine, &code) }?;
    let mut linker: Linker<RequestState> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    let pre = linker
        .instantiate_pre(&component)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot link {name}"))?;
    let pre = ProxyPre::new(pre)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot link {name} as a wasi:http/proxy"))?;
    let listener = listen
        .listen()
        .with_context(|| format!("cannot listen on {} ({ADDR_ENV})", listen.addr))?;
    let mut guest = spec.clone();
    guest.env.retain(|(k, _)| k != ADDR_ENV && k != BACKLOG_ENV);
    // Fails now, not per request, if a preopened directory cannot be opened.
    wasi_builder(&guest)?;
    Ok(Box::new(HttpFunction {
        server: Arc::new(Server {
            pre,
            spec: guest,
            slots: Arc::new(tokio::sync::Semaphore::new(
                MAX_CONCURRENT_REQUESTS as usize,
            )),
            requests: AtomicU64::new(0),
            unsent: AtomicU64::new(0),
            instances: AtomicU64::new(0),
            instantiating_ns: AtomicU64::new(0),
        }),
        listener,
    }))
}

/// Checks that the component's `wasi:http/incoming-handler` exports
/// `handle(request: own<incoming-request>, response-out: own<response-outparam>)`
/// returning nothing, so that a wrong one is refused at Create (linking
/// checks only that the export is there; its type would be checked at the
/// first request).
fn check_handler(component: &Component) -> anyhow::Result<()> {
    use wasmtime::component::types::ComponentItem;
    use wasmtime::component::Type;
    let engine = component.engine();
    let ty = component.component_type();
    let (name, handler) = ty
        .exports(engine)
        .find(|(name, _)| name.starts_with("wasi:http/incoming-handler@"))
        .context("it exports no wasi:http/incoming-handler")?;
    let ComponentItem::ComponentInstance(handler) = handler.ty else {
        bail!("its export {name} is not an interface");
    };
    let handle = handler
        .get_export(engine, "handle")
        .with_context(|| format!("{name} has no function 'handle'"))?;
    let ComponentItem::ComponentFunc(handle) = handle.ty else {
        bail!("{name}#handle is not a function");
    };
    let params: Vec<Type> = handle.params().map(|(_, ty)| ty).collect();
    let shape_ok =
        matches!(params.as_slice(), [Type::Own(_), Type::Own(_)]) && handle.results().len() == 0;
    ensure!(
        shape_ok,
        "{name}#handle does not take (incoming-request, response-outparam) and return nothing"
    );
    Ok(())
}

/// A linked HTTP component and its bound listener, ready to serve.
struct HttpFunction {
    server: Arc<Server>,
    listener: std::net::TcpListener,
}

/// What every request shares: the pre-linked component and the WASI view.
struct Server {
    pre: ProxyPre<RequestState>,
    spec: RunSpec,
    slots: Arc<tokio::sync::Semaphore>,
    /// Requests answered (by the component, or with a 500).
    requests: AtomicU64,
    /// Connections closed at stop after [`STOP_GRACE`] without a request.
    unsent: AtomicU64,
    /// Instances made, and the time that took in all, ns.
    instances: AtomicU64,
    instantiating_ns: AtomicU64,
}

impl PreparedModule for HttpFunction {
    fn run(self: Box<Self>) -> Outcome {
        let _faults = crate::engine::faults::shared();
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => return Outcome::Trapped(format!("cannot start the HTTP server: {e}")),
        };
        let HttpFunction { server, listener } = *self;
        match runtime.block_on(serve(server, listener)) {
            Ok(()) => Outcome::Exited(0),
            Err(e) => Outcome::Trapped(format!("{e:#}")),
        }
    }
}

/// Accepts connections until SIGTERM, then takes those already queued,
/// closes the listener and waits for every connection to finish.
async fn serve(server: Arc<Server>, listener: std::net::TcpListener) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let mut term = signal(SignalKind::terminate())?;
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    eprintln!("serving HTTP on http://{}/", listener.local_addr()?);
    loop {
        tokio::select! {
            _ = term.recv() => break,
            client = listener.accept() => {
                let client = match client {
                    Ok((client, _)) => client,
                    Err(e) => {
                        // Out of descriptors, say: try again shortly, never spin.
                        log::warn!("accepting an HTTP connection: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                connections.spawn(connection(server.clone(), client, stopping.clone()));
            }
        }
    }
    // Connections the kernel completed before SIGTERM were accepted by the
    // container as far as its clients know: serve them too.
    while let Ok(Ok((client, _))) = tokio::time::timeout(Duration::ZERO, listener.accept()).await {
        connections.spawn(connection(server.clone(), client, stopping.clone()));
    }
    drop(listener);
    let _ = stop.send(true);
    while connections.join_next().await.is_some() {}
    eprintln!(
        "stopped on SIGTERM: {} requests answered, {} connections closed with no request",
        server.requests.load(Ordering::Relaxed),
        server.unsent.load(Ordering::Relaxed)
    );
    let instances = server.instances.load(Ordering::Relaxed);
    if let Some(mean_ns) = server
        .instantiating_ns
        .load(Ordering::Relaxed)
        .checked_div(instances)
    {
        eprintln!(
            "instantiation: mean {:.1} µs over {instances} requests",
            mean_ns as f64 / 1e3
        );
    }
    Ok(())
}

/// Serves one HTTP/1.1 connection; once the server stops, lets it finish
/// the request in progress (or, if none came yet, the first one, for at most
/// [`STOP_GRACE`]) and closes it.
async fn connection(
    server: Arc<Server>,
    client: tokio::net::TcpStream,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let started = Arc::new(AtomicBool::new(false));
    let first = Arc::new(tokio::sync::Notify::new());
    let service = {
        let server = server.clone();
        let (started, first) = (started.clone(), first.clone());
        hyper::service::service_fn(move |req| {
            started.store(true, Ordering::Relaxed);
            first.notify_one();
            let server = server.clone();
            async move { server.handle(req).await }
        })
    };
    let conn = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(client), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stopping.wait_for(|stop| *stop) => {}
    }
    if !started.load(Ordering::Relaxed) {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = first.notified() => {}
            _ = tokio::time::sleep(STOP_GRACE) => {
                server.unsent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

impl Server {
    /// Answers one request with a fresh instance; a component that fails
    /// gets its client a 500 and the shim's log the reason.
    async fn handle(
        self: Arc<Self>,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> anyhow::Result<hyper::Response<HyperOutgoingBody>> {
        let response = match self.clone().instance_answer(req).await {
            Ok(response) => response,
            Err(e) => {
                log::warn!("HTTP request failed: {e:#}");
                let body = http_body_util::Empty::new()
                    .map_err(|never| match never {})
                    .boxed_unsync();
                hyper::Response::builder().status(500).body(body)?
            }
        };
        self.requests.fetch_add(1, Ordering::Relaxed);
        Ok(response)
    }

    async fn instance_answer(
        self: Arc<Self>,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> anyhow::Result<hyper::Response<HyperOutgoingBody>> {
        let slot = self.slots.clone().acquire_owned().await?;
        let mut store = Store::new(
            self.pre.engine(),
            RequestState {
                wasi: wasi_builder(&self.spec)?.build(),
                http: WasiHttpCtx::new(),
                table: ResourceTable::new(),
            },
        );
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        let server = self.clone();
        // The handler runs on as its own task: it may go on writing the body
        // after it has handed over the response.
        let task = tokio::task::spawn(async move {
            let _slot = slot;
            let began = std::time::Instant::now();
            let proxy = server.pre.instantiate_async(&mut store).await?;
            server.instances.fetch_add(1, Ordering::Relaxed);
            server
                .instantiating_ns
                .fetch_add(began.elapsed().as_nanos() as u64, Ordering::Relaxed);
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
        });
        match receiver.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => bail!("the component answered with error {code:?}"),
            Err(_) => match task.await {
                Ok(Ok(())) => bail!("the component returned without setting a response"),
                Ok(Err(e)) => {
                    Err(anyhow::Error::from(e).context("the component failed before it responded"))
                }
                Err(e) => Err(anyhow::Error::from(e).context("the request's task failed")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(env: &[(&str, &str)]) -> RunSpec {
        RunSpec {
            module: "/f.wasm".into(),
            module_name: "/f.wasm".into(),
            entry: "_start".into(),
            args: vec!["/f.wasm".into()],
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            preopens: Vec::new(),
        }
    }

    #[test]
    fn listen_config_defaults_and_errors_name_the_variable() {
        let config = ListenConfig::from_spec(&spec(&[])).unwrap();
        assert_eq!(config.addr, DEFAULT_ADDR.parse().unwrap());
        assert_eq!(config.backlog, DEFAULT_BACKLOG);
        let config =
            ListenConfig::from_spec(&spec(&[(ADDR_ENV, "127.0.0.1:9"), (BACKLOG_ENV, "7")]))
                .unwrap();
        assert_eq!(config.addr, "127.0.0.1:9".parse().unwrap());
        assert_eq!(config.backlog, 7);
        let err = ListenConfig::from_spec(&spec(&[(ADDR_ENV, "localhost")])).unwrap_err();
        assert!(err.to_string().contains(ADDR_ENV), "{err}");
        let err = ListenConfig::from_spec(&spec(&[(BACKLOG_ENV, "-1")])).unwrap_err();
        assert!(err.to_string().contains(BACKLOG_ENV), "{err}");
    }

    #[test]
    fn a_busy_address_is_refused_by_name() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let config = ListenConfig {
            addr: taken.local_addr().unwrap(),
            backlog: 1,
        };
        let err = config.listen().unwrap_err();
        assert!(format!("{err:#}").contains("in use"), "{err:#}");
    }
}
