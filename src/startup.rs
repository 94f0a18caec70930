//! Building and running the server: bind the listener (port 0 works), open the store, load the
//! server key, mount the routes, stop gracefully and flush.

use crate::admin::{self, auth::AdminTokens, AdminState};
use crate::clock::{Clock, SystemClock};
use crate::credentials::{RatKey, SecretHasher};
use crate::directory::Directory;
use crate::events::worker::{spawn_retention, HttpsTransport};
use crate::events::{DeliveryWorker, Events, WorkerHandle};
use crate::fetch::{Fetcher, RemoteMetadata};
use crate::http::{self, AppState, BodyLimits};
use crate::policy::PolicyEngine;
use crate::registration::upstream::{Schedule, UpstreamTask};
use crate::registration::{Parts, Registrar};
use crate::settings::Settings;
use crate::store::OpenError;
use crate::tokens::{OsTokens, TokenGenerator};
use actix_web::dev::Server;
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, App, HttpServer};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The store could not be opened (e.g. another instance holds it).
    #[error(transparent)]
    Store(#[from] OpenError),
    /// The listener could not be bound.
    #[error("cannot listen on {0}: {1}")]
    Bind(String, std::io::Error),
    /// The server key could not be read or created.
    #[error("server key: {0}")]
    ServerKey(String),
    /// `[access]`, `[policies]` or `[rate_limit]` is inconsistent.
    #[error("registration policy configuration: {0}")]
    Policy(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// A built, not yet running, server.
pub struct Application {
    server: Server,
    port: u16,
    /// The admin listener, its port and its service.
    admin: Option<(Server, u16, Arc<Directory>)>,
    registrar: Arc<Registrar>,
    /// Keeps the authorization server's metadata in discovery (`[discovery]`), if configured.
    upstream: Option<UpstreamTask>,
    /// Delivers the webhook outbox (`crate::events::worker`).
    worker: WorkerHandle,
    /// Prunes the audit trail (`audit.retention_days`), if on.
    retention: Option<WorkerHandle>,
}

/// How often the webhook worker looks at the outbox when no commit woke it (retries come due).
const WEBHOOK_POLL: Duration = Duration::from_millis(500);
/// How often audit retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

impl Application {
    /// Build with the system clock and the OS random generator. Asynchronous because opening
    /// the store may wait on disk or a database.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        Self::build_with(settings, Arc::new(SystemClock), Arc::new(OsTokens)).await
    }

    /// Build with an injected clock and token generator (tests).
    pub async fn build_with(
        mut settings: Settings,
        clock: Arc<dyn Clock>,
        tokens: Arc<dyn TokenGenerator>,
    ) -> Result<Self, StartupError> {
        let address = format!("{}:{}", settings.server.host, settings.server.port);
        let listener =
            TcpListener::bind(&address).map_err(|e| StartupError::Bind(address.clone(), e))?;
        let local = listener
            .local_addr()
            .map_err(|e| StartupError::Bind(address, e))?;
        if settings.issuer.is_empty() {
            settings.issuer = format!("http://{local}");
        }
        let store = crate::store::open(&settings.storage, clock.now()).await?;
        let rat_key = crate::store::server_key::resolve(&settings, store.as_ref(), tokens.as_ref())
            .await
            .and_then(|key| RatKey::new(key).map_err(|e| e.to_string()))
            .map_err(StartupError::ServerKey)?;
        let c = &settings.credentials;
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let concurrency = if c.hash_concurrency == 0 {
            cores
        } else {
            c.hash_concurrency
        };
        let hasher = SecretHasher::new(
            c.argon2_memory_kib,
            c.argon2_iterations,
            c.argon2_parallelism,
            concurrency,
        )
        .and_then(|h| h.with_derivation_key(&c.client_secret_derivation_key))
        .map_err(|e| StartupError::Other(e.to_string()))?
        .with_queue_limit(c.hash_queue_limit);
        let fetcher =
            Fetcher::new(&settings.fetch).map_err(|e| StartupError::Other(e.to_string()))?;
        let remote = Arc::new(RemoteMetadata::new(fetcher, settings.fetch.fetch_jwks_uri));
        let policy =
            Arc::new(PolicyEngine::from_settings(&settings).map_err(StartupError::Policy)?);
        let admin_tokens =
            AdminTokens::compile(&settings.admin.tokens).map_err(StartupError::Other)?;
        let settings = Arc::new(settings);
        let events = Arc::new(Events::new(settings.webhooks.clone(), tokens.clone()));
        let transport =
            HttpsTransport::new(&settings.fetch).map_err(|e| StartupError::Other(e.to_string()))?;
        let worker = DeliveryWorker::new(
            store.clone(),
            Arc::new(transport),
            clock.clone(),
            &settings.webhooks,
        )
        .map_err(StartupError::Other)?
        .spawn(WEBHOOK_POLL, events.waker());
        let retention = spawn_retention(
            store.clone(),
            settings.audit.clone(),
            clock.clone(),
            RETENTION_EVERY,
        );
        let parts = Parts {
            store,
            clock,
            tokens,
            events,
            hasher,
            rat_key,
            settings: settings.clone(),
            remote,
            policy,
        };
        let registrar = Arc::new(Registrar::new(parts.clone()));
        let upstream = start_upstream(&settings, &registrar)?;
        let state = web::Data::new(AppState {
            registrar: registrar.clone(),
            limits: BodyLimits {
                max_bytes: settings.server.body_limit_bytes,
                timeout: Duration::from_millis(settings.server.body_timeout_ms),
            },
        });
        let app_settings = settings.clone();
        let access_log =
            tracing::enabled!(target: "actix_web::middleware::logger", tracing::Level::INFO);
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap(http::cors(&app_settings.cors))
                .wrap(DefaultHeaders::new().add(("X-Content-Type-Options", "nosniff")))
                // Access log only when it would be written: formatting a line per request costs
                // several percent of the read path even when the filter then drops it.
                .wrap(actix_web::middleware::Condition::new(
                    access_log,
                    // The request line is the client's text: written through the one log
                    // escape, so a path cannot end the line (issue #12 item 5).
                    actix_web::middleware::Logger::new("%{request}xi %s %Dms")
                        .custom_request_replace("request", |req| {
                            crate::logsafe::escaped(format_args!(
                                "{} {} {:?}",
                                req.method(),
                                req.uri(),
                                req.version()
                            ))
                            .to_string()
                        })
                        .exclude("/healthz")
                        .exclude("/readyz"),
                ))
                .configure(http::routes(
                    &app_settings.registration_path,
                    &app_settings.issuer,
                ))
                .default_service(http::default_service())
        })
        .client_request_timeout(Duration::from_millis(settings.server.head_timeout_ms))
        .max_connections(settings.server.max_connections)
        .shutdown_timeout(10);
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        let server = server
            .listen(listener)
            .map_err(|e| StartupError::Bind(local.to_string(), e))?
            .run();
        let admin = if admin_tokens.is_empty() {
            None
        } else {
            let directory = Arc::new(Directory::new(parts, registrar.clone()));
            let server = admin_server(&settings, directory.clone(), admin_tokens)?;
            Some((server.0, server.1, directory))
        };
        Ok(Self {
            server,
            port: local.port(),
            admin,
            registrar,
            upstream,
            worker,
            retention,
        })
    }

    /// The bound port of the admin listener, when it runs (at least one admin token).
    pub fn admin_port(&self) -> Option<u16> {
        self.admin.as_ref().map(|(_, port, _)| *port)
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The absolute registration endpoint URL.
    pub fn registration_endpoint(&self) -> String {
        self.registrar.registration_endpoint().to_owned()
    }

    /// A handle that stops the server (tests).
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serve until SIGINT/SIGTERM (or `handle().stop()`). Every acknowledged write was durable
    /// before its response (`ClientStore::commit`), so there is nothing left to flush; the store
    /// closes when its last handle drops.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        // The admin listener lives as long as the public one: stopping the public server (a
        // signal, or `handle().stop()`) stops it too.
        let admin = self.admin.map(|(server, _, directory)| {
            tokio::spawn(async move {
                if let Err(e) = directory.warm().await {
                    tracing::warn!(error = %e, "could not prepare the dummy client secret hash");
                }
            });
            let handle = server.handle();
            (tokio::spawn(server), handle)
        });
        let result = self.server.await;
        if let Some((task, handle)) = admin {
            handle.stop(true).await;
            let _ = task.await;
        }
        if let Some(upstream) = self.upstream {
            upstream.stop().await;
        }
        // Undelivered webhooks stay in the outbox for the next start.
        self.worker.stop().await;
        if let Some(retention) = self.retention {
            retention.stop().await;
        }
        drop(self.registrar);
        tracing::info!("stopped");
        result
    }
}

/// The admin listener: its own address, its own routes, no CORS (Hydra's split).
fn admin_server(
    settings: &Settings,
    directory: Arc<Directory>,
    tokens: AdminTokens,
) -> Result<(Server, u16), StartupError> {
    let address = format!("{}:{}", settings.admin.host, settings.admin.port);
    let listener =
        TcpListener::bind(&address).map_err(|e| StartupError::Bind(address.clone(), e))?;
    let port = listener
        .local_addr()
        .map_err(|e| StartupError::Bind(address.clone(), e))?
        .port();
    let state = web::Data::new(AdminState {
        directory,
        tokens,
        limits: BodyLimits {
            max_bytes: settings.server.body_limit_bytes,
            timeout: Duration::from_millis(settings.server.body_timeout_ms),
        },
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap(DefaultHeaders::new().add(("X-Content-Type-Options", "nosniff")))
            .configure(admin::routes)
    })
    .client_request_timeout(Duration::from_millis(settings.server.head_timeout_ms))
    .workers(2)
    .shutdown_timeout(10)
    .listen(listener)
    .map_err(|e| StartupError::Bind(address, e))?
    .run();
    tracing::info!(address = %format!("{}:{port}", settings.admin.host), "admin API listening");
    Ok((server, port))
}

/// Start the task that fetches `discovery.authorization_server_metadata_url`; without one, warn
/// now if the documents lack members client libraries require (RFC 8414 §2, OIDC Discovery §3).
fn start_upstream(
    settings: &Settings,
    registrar: &Registrar,
) -> Result<Option<UpstreamTask>, StartupError> {
    let d = &settings.discovery;
    if d.authorization_server_metadata_url.is_empty() {
        if let Some(warning) = registrar.discovery_service().incomplete_warning() {
            tracing::warn!("{warning}");
        }
        return Ok(None);
    }
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
        StartupError::Other("the server must be built inside a Tokio runtime".into())
    })?;
    // A fetcher of its own: the authorization server's metadata neither waits for the slots of
    // client-triggered fetches nor shares their negative cache.
    let fetcher = Fetcher::new(&settings.fetch).map_err(|e| StartupError::Other(e.to_string()))?;
    let schedule = Schedule {
        refresh: Duration::from_secs(d.authorization_server_metadata_refresh_secs),
        first_retry: Duration::from_millis(settings.fetch.failure_ttl_ms),
    };
    Ok(Some(UpstreamTask::spawn(
        &runtime,
        registrar.discovery_service().clone(),
        fetcher,
        d.authorization_server_metadata_url.clone(),
        schedule,
    )))
}
