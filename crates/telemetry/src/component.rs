//! One shape for every long-running component: the schema registry, the gateway, the KPI
//! engine and each sink connector are configured, then started into a [`Running`] handle that
//! knows its address, says whether the component can do its job, and stops it gracefully.
//!
//! A component's HTTP side is served here, always with the same three routes beside its own:
//!
//! - `GET /metrics`: the process's [`Telemetry`] in Prometheus' text format;
//! - `GET /healthz`: `200 {"status":"alive"}` while the process serves;
//! - `GET /readyz`: `200 {"status":"ready"}`, or `503 {"status":"not_ready","problems":[…]}`
//!   with what its [`Readiness`] check found missing.
//!
//! Stopping is the same everywhere. Cancel the token the component was started under (or call
//! [`Running::stop`]): the HTTP side stops accepting and lets requests in flight finish; the
//! component's work, which [`Stopping::drained`] tells when that has happened, finishes what it
//! holds; [`Running::wait`] returns how the work ended. A component whose work ends on its own
//! (an error) stops its HTTP side too; what that means for the rest of the process is for
//! whoever started it to decide (`lienthong up` stops every component).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use futures::future::BoxFuture;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{Telemetry, TelemetryError};

/// What a component lacks to do its job now: an empty list means ready.
pub type Readiness = Arc<dyn Fn() -> BoxFuture<'static, Vec<String>> + Send + Sync>;

/// How long the HTTP side may take to finish its requests in flight once asked to stop.
const HTTP_DRAIN: Duration = Duration::from_secs(30);

/// A bound address for a component's HTTP side.
#[derive(Debug)]
pub struct Listener {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
}

impl Listener {
    /// Bind `listen` (`host:port`; port 0 picks a free one). `key` names the setting in errors
    /// (`gateway.listen`, `metrics_listen`, …).
    pub async fn bind(key: &str, listen: &str) -> Result<Listener, TelemetryError> {
        let not_an_address = || TelemetryError::NotAnAddress {
            key: key.to_string(),
            listen: listen.to_string(),
        };
        let addr = tokio::net::lookup_host(listen)
            .await
            .map_err(|_| not_an_address())?
            .next()
            .ok_or_else(not_an_address)?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| TelemetryError::Listen {
                key: key.to_string(),
                listen: listen.to_string(),
                source,
            })?;
        Listener::from_tokio(listener).map_err(|source| TelemetryError::Listen {
            key: key.to_string(),
            listen: listen.to_string(),
            source,
        })
    }

    /// Serve on a listener bound elsewhere.
    pub fn from_tokio(listener: tokio::net::TcpListener) -> std::io::Result<Listener> {
        let addr = listener.local_addr()?;
        Ok(Listener { listener, addr })
    }

    /// The address it is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// The routes every component serves beside its own: `/metrics`, `/healthz` and `/readyz`.
pub fn routes(telemetry: Arc<Telemetry>, readiness: Readiness) -> Router {
    crate::router(telemetry)
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "alive"})) }),
        )
        .route(
            "/readyz",
            get(move || {
                let check = readiness();
                async move {
                    let problems = check.await;
                    if problems.is_empty() {
                        (
                            StatusCode::OK,
                            axum::Json(serde_json::json!({"status": "ready"})),
                        )
                            .into_response()
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            axum::Json(
                                serde_json::json!({"status": "not_ready", "problems": problems}),
                            ),
                        )
                            .into_response()
                    }
                }
            }),
        )
}

/// A readiness check that always passes: for a component ready as soon as it serves.
pub fn always_ready() -> Readiness {
    Arc::new(|| Box::pin(async { Vec::new() }))
}

/// What a component's work is told about stopping.
#[derive(Debug, Clone)]
pub struct Stopping {
    stop: CancellationToken,
    drained: CancellationToken,
}

impl Stopping {
    /// Cancelled when the component is asked to stop: hand it to the component's loop.
    pub fn token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Resolves once the component's HTTP side has stopped and its requests in flight have
    /// been answered (at once after the stop request when it serves no HTTP).
    pub async fn drained(&self) {
        self.drained.cancelled().await;
    }
}

type RoutesFn = Box<dyn FnOnce(Router) -> Router + Send>;

/// A component being configured: its name, its HTTP side, its readiness check.
pub struct Component {
    name: String,
    telemetry: Arc<Telemetry>,
    stop: CancellationToken,
    readiness: Readiness,
    http: Option<(Listener, RoutesFn)>,
}

impl Component {
    /// A component that stops when `shutdown` is cancelled (it runs under a child token of
    /// it: stopping the component alone leaves `shutdown` untouched).
    pub fn new(
        name: impl Into<String>,
        telemetry: &Arc<Telemetry>,
        shutdown: &CancellationToken,
    ) -> Component {
        Component {
            name: name.into(),
            telemetry: Arc::clone(telemetry),
            stop: shutdown.child_token(),
            readiness: always_ready(),
            http: None,
        }
    }

    /// How `/readyz` and [`Running::problems`] find out what the component lacks.
    pub fn readiness(mut self, readiness: Readiness) -> Component {
        self.readiness = readiness;
        self
    }

    /// Serve the common [`routes`] on `listener`.
    pub fn serve(self, listener: Listener) -> Component {
        self.serve_with(listener, |common| common)
    }

    /// Serve on `listener` the router `routes` builds around the common [`routes`] (so that
    /// the component's own layers, such as request counting, see them too).
    pub fn serve_with(
        mut self,
        listener: Listener,
        routes: impl FnOnce(Router) -> Router + Send + 'static,
    ) -> Component {
        self.http = Some((listener, Box::new(routes)));
        self
    }

    /// Start serving and start `work`, which runs until the component is asked to stop (its
    /// [`Stopping::token`]) or ends on its own.
    pub fn start<E, W, F>(self, work: W) -> Running<E>
    where
        E: std::fmt::Display + Send + 'static,
        W: FnOnce(Stopping) -> F,
        F: Future<Output = Result<(), E>> + Send + 'static,
    {
        let Component {
            name,
            telemetry,
            stop,
            readiness,
            http,
        } = self;
        let stopping = Stopping {
            stop: stop.clone(),
            drained: CancellationToken::new(),
        };
        let addr = http.as_ref().map(|(l, _)| l.addr);
        let server = http.map(|(listener, build)| {
            let router = build(routes(telemetry, Arc::clone(&readiness)));
            let stop = stop.clone();
            let name = name.clone();
            tracing::info!(component = %name, address = %listener.addr, "serving HTTP");
            tokio::spawn(async move {
                let served = axum::serve(listener.listener, router)
                    .with_graceful_shutdown(stop.clone().cancelled_owned())
                    .await;
                if let Err(e) = served {
                    tracing::error!(component = %name, error = %e, "HTTP server stopped");
                }
                // A server that stopped on its own stops the component.
                stop.cancel();
            })
        });
        let http_side = {
            let stopping = stopping.clone();
            let name = name.clone();
            async move {
                stopping.stop.cancelled().await;
                if let Some(server) = server {
                    let abort = server.abort_handle();
                    if tokio::time::timeout(HTTP_DRAIN, server).await.is_err() {
                        tracing::warn!(
                            component = %name,
                            "requests in flight not answered within {HTTP_DRAIN:?}; closed"
                        );
                        abort.abort();
                    }
                }
                stopping.drained.cancel();
            }
        };
        let work = work(stopping.clone());
        let task_name = name.clone();
        let task = tokio::spawn(async move {
            let work = async {
                let result = work.await;
                stopping.stop.cancel();
                result
            };
            let (result, ()) = tokio::join!(work, http_side);
            if let Err(e) = &result {
                tracing::error!(component = %task_name, error = %e, "stopped with an error");
            }
            result
        });
        Running {
            name,
            addr,
            readiness,
            stop,
            task,
        }
    }
}

/// A started component.
pub struct Running<E> {
    name: String,
    addr: Option<SocketAddr>,
    readiness: Readiness,
    stop: CancellationToken,
    task: JoinHandle<Result<(), E>>,
}

impl<E> std::fmt::Debug for Running<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .finish()
    }
}

impl<E> Running<E> {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where its HTTP side listens, if it has one.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// What it lacks to do its job now (empty: ready), as `/readyz` answers.
    pub async fn problems(&self) -> Vec<String> {
        (self.readiness)().await
    }

    /// Ask it to stop (it finishes what it holds); [`Running::wait`] for the end.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Wait until it has stopped, and say how its work ended. A panic in the work is resumed
    /// here, as a direct call would have.
    pub async fn wait(self) -> Result<(), E> {
        match self.task.await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => {
                tracing::warn!(component = %self.name, error = %e, "task cancelled");
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        let status = answer[9..12].parse().unwrap();
        let body = answer
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_string();
        (status, body)
    }

    fn flag_readiness(ready: &Arc<AtomicBool>) -> Readiness {
        let ready = Arc::clone(ready);
        Arc::new(move || {
            let ok = ready.load(Ordering::Acquire);
            Box::pin(async move {
                if ok {
                    Vec::new()
                } else {
                    vec!["still rebuilding".to_string()]
                }
            })
        })
    }

    #[tokio::test]
    async fn serves_metrics_health_and_readiness_then_stops_after_draining() {
        let telemetry = Telemetry::new("test").unwrap();
        let shutdown = CancellationToken::new();
        let ready = Arc::new(AtomicBool::new(false));
        let listener = Listener::bind("test.listen", "127.0.0.1:0").await.unwrap();
        let drained_before_work_ended = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&drained_before_work_ended);
        let running = Component::new("test", &telemetry, &shutdown)
            .readiness(flag_readiness(&ready))
            .serve_with(listener, |common| {
                common.route("/own", axum::routing::get(|| async { "mine" }))
            })
            .start(move |stopping: Stopping| async move {
                stopping.token().cancelled().await;
                stopping.drained().await;
                seen.store(true, Ordering::Release);
                Ok::<(), String>(())
            });
        let addr = running.addr().unwrap();
        assert_eq!(
            get(addr, "/healthz").await,
            (200, r#"{"status":"alive"}"#.into())
        );
        let (status, body) = get(addr, "/readyz").await;
        assert_eq!(status, 503);
        assert!(body.contains("still rebuilding"), "{body}");
        assert_eq!(running.problems().await, vec!["still rebuilding"]);
        ready.store(true, Ordering::Release);
        assert_eq!(
            get(addr, "/readyz").await,
            (200, r#"{"status":"ready"}"#.into())
        );
        assert_eq!(get(addr, "/own").await, (200, "mine".into()));
        let (status, metrics) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(metrics.contains("lienthong_build_info"), "{metrics}");
        shutdown.cancel();
        running.wait().await.unwrap();
        assert!(drained_before_work_ended.load(Ordering::Acquire));
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "the listener is closed"
        );
    }

    #[tokio::test]
    async fn stopping_one_component_leaves_the_others_and_a_failure_is_returned() {
        let telemetry = Telemetry::new("test").unwrap();
        let root = CancellationToken::new();
        let quiet = Component::new("quiet", &telemetry, &root).start(|s: Stopping| async move {
            s.token().cancelled().await;
            Ok::<(), String>(())
        });
        quiet.stop();
        quiet.wait().await.unwrap();
        assert!(!root.is_cancelled(), "stopping one component stops only it");
        let listener = Listener::bind("test.listen", "127.0.0.1:0").await.unwrap();
        let failing = Component::new("failing", &telemetry, &root)
            .serve(listener)
            .start(|_| async { Err::<(), String>("the store refused".into()) });
        let addr = failing.addr().unwrap();
        assert_eq!(failing.wait().await.unwrap_err(), "the store refused");
        assert!(!root.is_cancelled());
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "work that ended on its own stopped the HTTP side"
        );
    }

    #[tokio::test]
    async fn a_listen_address_that_is_not_one_is_a_config_error() {
        let e = Listener::bind("kpi.listen", "not an address")
            .await
            .unwrap_err();
        assert!(e.is_config(), "{e}");
        assert!(e.to_string().contains("kpi.listen"), "{e}");
        let taken = Listener::bind("a", "127.0.0.1:0").await.unwrap();
        let e = Listener::bind("b.listen", &taken.addr().to_string())
            .await
            .unwrap_err();
        assert!(!e.is_config(), "a port in use is not a config mistake: {e}");
    }
}
