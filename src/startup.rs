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
use crate::lifecycle::Sweeper;
use crate::policy::PolicyEngine;
use crate::registration::upstream::{Schedule, UpstreamTask};
use crate::registration::{Parts, Registrar};
use crate::settings::Settings;
use crate::store::{OpenError, StoreEvents};
use crate::telemetry::{HttpTelemetry, Metrics};
use crate::tls::{self, ReloadableCert};
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
    /// `[server.tls]` names unreadable or mismatched certificate files.
    #[error("server.tls: {0}")]
    Tls(#[from] tls::TlsError),
    /// `[admin.tls]` names unreadable or mismatched certificate files.
    #[error("admin.tls: {0}")]
    AdminTls(tls::TlsError),
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
    metrics: Arc<Metrics>,
    /// Certificates re-read on SIGHUP (empty without TLS).
    tls_certs: Vec<Arc<ReloadableCert>>,
    /// The lifecycle sweeper, when `[lifecycle]` reaps (started by `run_until_stopped`).
    sweeper: Option<Arc<Sweeper>>,
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
        // TLS is built before anything is opened, so bad certificate files fail fast.
        let tls = if settings.server.tls.enabled() {
            Some(tls::server_config(&settings.server.tls)?)
        } else {
            None
        };
        if settings.issuer.is_empty() {
            let scheme = if tls.is_some() { "https" } else { "http" };
            settings.issuer = format!("{scheme}://{local}");
        }
        let metrics = Arc::new(Metrics::new());
        let store = crate::store::open(&settings.storage, clock.now()).await?;
        let (batch_metrics, retry_metrics, redo_metrics, cache_metrics) = (
            metrics.clone(),
            metrics.clone(),
            metrics.clone(),
            metrics.clone(),
        );
        store.observe(Arc::new(StoreEvents {
            commit_batch: Box::new(move |writers| batch_metrics.commit_batch(writers)),
            retry: Box::new(move || retry_metrics.db_retry()),
            group_redo: Box::new(move || redo_metrics.db_group_redo()),
            record_cache: Box::new(move |tree, hit| cache_metrics.record_cache(tree, hit)),
        }));
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
        let remote = Arc::new(
            RemoteMetadata::new(fetcher, settings.fetch.fetch_jwks_uri)
                .with_metrics(metrics.clone()),
        );
        let policy =
            Arc::new(PolicyEngine::from_settings(&settings).map_err(StartupError::Policy)?);
        let admin_tokens =
            AdminTokens::compile(&settings.admin.tokens).map_err(StartupError::Other)?;
        let settings = Arc::new(settings);
        if !settings.audit.enabled {
            tracing::warn!(
                "audit.enabled = false: changes are not recorded in the audit trail while it is off"
            );
        }
        let events = Arc::new(
            Events::new(settings.webhooks.clone(), tokens.clone())
                .with_audit(settings.audit.enabled),
        );
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
            metrics: metrics.clone(),
        };
        let registrar = Arc::new(Registrar::new(parts.clone()));
        let proxies = crate::policy::ratelimit::ClientIpResolver::new(&settings.rate_limit)
            .map_err(StartupError::Policy)?;
        let http_telemetry = web::Data::new(HttpTelemetry {
            metrics: metrics.clone(),
            listener: "public",
            proxies: proxies.clone(),
        });
        let upstream = start_upstream(&settings, &registrar)?;
        let state = web::Data::new(AppState {
            registrar: registrar.clone(),
            limits: BodyLimits {
                max_bytes: settings.server.body_limit_bytes,
                timeout: Duration::from_millis(settings.server.body_timeout_ms),
            },
        });
        let app_settings = settings.clone();
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(http_telemetry.clone())
                .wrap(http::cors(&app_settings.cors))
                .wrap(DefaultHeaders::new().add(("X-Content-Type-Options", "nosniff")))
                // Outermost: request id, request span, access log (target registrar::access,
                // formatted only when enabled) and request metrics see every response.
                .wrap(actix_web::middleware::from_fn(
                    crate::telemetry::http::middleware,
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
        let mut tls_certs = Vec::new();
        let server = match tls {
            Some((config, certs)) => {
                tls_certs.push(certs);
                server.listen_rustls_0_23(listener, config)
            }
            None => server.listen(listener),
        };
        let server = server
            .map_err(|e| StartupError::Bind(local.to_string(), e))?
            .run();
        let admin = if admin_tokens.is_empty() {
            None
        } else {
            let directory = Arc::new(Directory::new(parts, registrar.clone()));
            let extras = AdminExtras {
                telemetry: web::Data::new(HttpTelemetry {
                    metrics: metrics.clone(),
                    listener: "admin",
                    proxies,
                }),
                scrape: web::Data::new(crate::telemetry::Scrape::new(
                    metrics.clone(),
                    registrar.clone(),
                )),
                openapi: web::Data::new(crate::telemetry::OpenApiDocument::new(&settings)),
            };
            let (server, port, certs) =
                admin_server(&settings, directory.clone(), admin_tokens, extras)?;
            tls_certs.extend(certs);
            Some((server, port, directory))
        };
        let sweeper = settings
            .lifecycle
            .reaps()
            .then(|| Arc::new(Sweeper::new(registrar.clone(), settings.lifecycle.clone())));
        Ok(Self {
            server,
            port: local.port(),
            admin,
            registrar,
            metrics,
            tls_certs,
            sweeper,
            upstream,
            worker,
            retention,
        })
    }

    /// What `GET /metrics` renders for this server (also for tests and embedders).
    pub fn scrape(&self) -> crate::telemetry::Scrape {
        crate::telemetry::Scrape::new(self.metrics.clone(), self.registrar.clone())
    }

    /// The bound port of the admin listener, when it runs (at least one admin token).
    pub fn admin_port(&self) -> Option<u16> {
        self.admin.as_ref().map(|(_, port, _)| *port)
    }

    /// The lifecycle sweeper, when `[lifecycle]` has a TTL set; tests drive it with
    /// `Sweeper::sweep` on their injected clock.
    pub fn sweeper(&self) -> Option<Arc<Sweeper>> {
        self.sweeper.clone()
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
        let reload = (!self.tls_certs.is_empty())
            // tokio's spawn, not actix's spawn_local: tests run the server on a plain runtime.
            .then(|| tokio::spawn(tls::reload_on_sighup(self.tls_certs.clone())));
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
        let sweeper = self.sweeper.map(Sweeper::spawn);
        let result = self.server.await;
        if let Some(reload) = reload {
            reload.abort();
        }
        if let Some(sweeper) = sweeper {
            sweeper.stop().await;
        }
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
    extras: AdminExtras,
) -> Result<(Server, u16, Option<Arc<ReloadableCert>>), StartupError> {
    let tls = if settings.admin.tls.enabled() {
        Some(tls::server_config(&settings.admin.tls).map_err(StartupError::AdminTls)?)
    } else {
        None
    };
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
        metrics_require_token: settings.admin.metrics_require_token,
        proxies: extras.telemetry.proxies.clone(),
    });
    let AdminExtras {
        telemetry,
        scrape,
        openapi,
    } = extras;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(telemetry.clone())
            .app_data(scrape.clone())
            .app_data(openapi.clone())
            .wrap(DefaultHeaders::new().add(("X-Content-Type-Options", "nosniff")))
            .wrap(actix_web::middleware::from_fn(
                crate::telemetry::http::middleware,
            ))
            .configure(admin::routes)
    })
    .client_request_timeout(Duration::from_millis(settings.server.head_timeout_ms))
    .workers(2)
    .shutdown_timeout(10);
    let (server, certs) = match tls {
        Some((config, certs)) => (server.listen_rustls_0_23(listener, config), Some(certs)),
        None => (server.listen(listener), None),
    };
    let server = server.map_err(|e| StartupError::Bind(address, e))?.run();
    tracing::info!(address = %format!("{}:{port}", settings.admin.host), "admin API listening");
    Ok((server, port, certs))
}

/// What the admin listener serves besides the admin routes: its request telemetry, the metrics
/// and the OpenAPI document.
struct AdminExtras {
    telemetry: web::Data<HttpTelemetry>,
    scrape: web::Data<crate::telemetry::Scrape>,
    openapi: web::Data<crate::telemetry::OpenApiDocument>,
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
